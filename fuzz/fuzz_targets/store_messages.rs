//! The store's message decoding and validation, exactly as the store runs it: telemetry (job
//! observations, worker heartbeats), outcome events, and the request-reply API's requests.
//!
//! Input layout: byte 0 picks the message kind; the rest is the payload. A message that is
//! accepted must still be accepted once re-encoded (what a worker or the store republishes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use synergai_contract::store::{BestRequest, LedgerQuery, TableRequest, UpsertProfiles};
use synergai_contract::validate;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    match kind % 7 {
        0 => {
            if let Ok(o) = validate::decode_job(payload) {
                let again = serde_json::to_vec(&o).expect("encodes");
                assert!(
                    validate::decode_job(&again).is_ok(),
                    "re-encoded job refused"
                );
            }
        }
        1 => {
            if let Ok(h) = validate::decode_heartbeat(payload) {
                let again = serde_json::to_vec(&h).expect("encodes");
                assert!(
                    validate::decode_heartbeat(&again).is_ok(),
                    "re-encoded heartbeat refused"
                );
            }
        }
        2 => {
            if let Ok(o) = validate::decode_outcome(payload) {
                let again = serde_json::to_vec(&o).expect("encodes");
                assert!(
                    validate::decode_outcome(&again).is_ok(),
                    "re-encoded outcome refused"
                );
            }
        }
        3 => {
            if let Ok(req) = validate::decode_request::<UpsertProfiles>(payload, None) {
                let _ = validate::check_upsert(&req);
            }
        }
        4 => {
            if let Ok(req) = validate::decode_request::<BestRequest>(payload, None) {
                let _ = validate::check_text("device_class", &req.device_class);
            }
        }
        5 => {
            let _ = validate::decode_request(payload, Some(TableRequest::default()));
        }
        _ => {
            let _ = validate::decode_request(payload, Some(LedgerQuery::default()));
        }
    }
});
