//! The intake's request decoding, JSON and binary form, and the admission check of the decoded
//! inputs against the catalogue's model specs.
//!
//! Input layout: byte 0 picks a catalogue model; bytes 1..3 (little-endian u16) give an
//! `Inference-Header-Content-Length` for the binary form; the rest is the body. The whole input
//! after byte 0 is also tried as a JSON body and as a header value.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use synergai_contract::catalog::Catalog;
use synergai_contract::oip::{InferenceRequest, decode_request, parse_header_len};

/// The catalogue written by `scripts/setup`, when present; without it the admission check is
/// skipped.
fn catalog() -> Option<&'static Catalog> {
    static CATALOG: OnceLock<Option<Catalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            let path = std::env::var("SYNERGAI_FUZZ_CATALOG").unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/catalog.json").to_owned()
            });
            Catalog::load(Path::new(&path)).ok()
        })
        .as_ref()
}

fn check(model: u8, req: InferenceRequest) {
    // What decodes re-encodes (as the intake forwards it, in the binary form) and decodes to
    // the same tensors, bit for bit.
    let enc = req.encode(true).expect("a decoded request encodes");
    let back = decode_request(&enc.body, enc.header_len).expect("an encoded request decodes");
    assert_eq!(back.inputs.len(), req.inputs.len());
    for (a, b) in req.inputs.iter().zip(&back.inputs) {
        assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.data.write_le_bytes(&mut x);
        b.data.write_le_bytes(&mut y);
        assert_eq!(a.data.datatype(), b.data.datatype());
        assert_eq!(x, y, "tensor data does not round-trip");
    }
    if let Some(catalog) = catalog()
        && !catalog.models.is_empty()
    {
        let entry = &catalog.models[usize::from(model) % catalog.models.len()];
        if let Ok((inputs, batch)) = entry.check_inputs(req.inputs) {
            assert!(batch >= 1);
            assert_eq!(inputs.len(), entry.inputs.len());
            for t in &inputs {
                let count = synergai_contract::tensor::element_count(&t.shape);
                assert_eq!(count.ok(), Some(t.data.len()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&model, rest)) = data.split_first() else {
        return;
    };
    if let Ok(req) = decode_request(rest, None) {
        check(model, req);
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = parse_header_len(text);
    }
    if rest.len() >= 2 {
        let header_len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        if let Ok(req) = decode_request(&rest[2..], Some(header_len)) {
            check(model, req);
        }
    }
});
