//! The load generator's library: the open-loop live runner ([`live`]), what it asks the running
//! system ([`cluster`]: profiles, live workers, predicted capacity, the scheduler's policy), and
//! the policy comparison ([`compare`]), and the simulator's front end ([`simulate`]). The binary `synergai-loadgen` is its command line.

pub mod cluster;
pub mod compare;
pub mod live;
pub mod output;
pub mod simulate;
