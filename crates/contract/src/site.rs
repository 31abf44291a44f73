//! Where a worker sits: its site's tier.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The tier of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Small devices close to where requests arrive.
    Edge,
    /// Servers in a data centre.
    #[default]
    Cloud,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Edge => "edge",
            Tier::Cloud => "cloud",
        })
    }
}
