//! Fuzz-style tests of the image parsers, run in CI in seconds: valid manifests, indexes
//! and configs mutated byte by byte and node by node must each give a result or an
//! InvalidArgument / NotFound error naming the object, never a panic or Internal, within a
//! stated heap bound.

use serde_json::{Value, json};

use super::oci::{
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Parsed, choose_platform, host_platform,
    parse_config, parse_manifest,
};
use crate::error::Error;
use crate::snapshot::apply::fuzz::{Rng, mutate_bytes, no_panic, peak_heap};

/// Mutated documents per seed.
const CASES_PER_SEED: usize = 600;
/// Heap a parser may use: a fixed allowance plus a small multiple of the input (serde
/// builds strings and vectors no longer than what it reads).
const PARSER_HEAP_BASE: usize = 64 << 10;
const PARSER_HEAP_PER_BYTE: usize = 8;

fn descriptor(media_type: &str, n: u8) -> Value {
    json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", hex::encode([n; 32])),
        "size": 1234 + u64::from(n),
    })
}

/// (document, media type the registry would announce)
fn seeds() -> Vec<(Value, &'static str)> {
    let layer = "application/vnd.oci.image.layer.v1.tar+gzip";
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", 1),
        "layers": [descriptor(layer, 2), descriptor(layer, 3)],
        "annotations": {"org.opencontainers.image.title": "fuzz"},
    });
    let mut platformed = descriptor(OCI_MANIFEST, 4);
    platformed["platform"] = json!({"architecture": host_platform().architecture, "os": "linux"});
    let mut arm = descriptor(OCI_MANIFEST, 5);
    arm["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm, platformed]});
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [
            format!("sha256:{}", hex::encode([6; 32])),
            format!("sha256:{}", hex::encode([7; 32])),
        ]},
    });
    vec![
        (manifest.clone(), OCI_MANIFEST),
        (manifest, DOCKER_MANIFEST),
        (index.clone(), OCI_INDEX),
        (index, DOCKER_LIST),
        (config, "config"),
    ]
}

/// Values that stress a parser where it expects something else.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(1.5e300),
        4 => json!("x".repeat(rng.below(4096))),
        5 => json!(""),
        6 => json!([]),
        7 => json!({}),
        _ => json!("sha256:../../etc/passwd"),
    }
}

/// Replaces, removes or duplicates one node of the tree.
fn mutate_value(rng: &mut Rng, value: &mut Value) {
    let descend = rng.below(3) != 0;
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            match (descend, rng.below(3)) {
                (true, _) => mutate_value(rng, map.get_mut(&key).expect("key")),
                (false, 0) => {
                    map.remove(&key);
                }
                (false, _) => {
                    map.insert(key, odd_value(rng));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let at = rng.below(items.len());
            match (descend, rng.below(3)) {
                (true, _) => mutate_value(rng, &mut items[at]),
                (false, 0) => {
                    items.remove(at);
                }
                (false, _) => {
                    let copy = items[at].clone();
                    items.extend(std::iter::repeat_n(copy, rng.below(64)));
                }
            }
        }
        other => *other = odd_value(rng),
    }
}

/// A mutated document: node-level edits of valid JSON, or byte-level ones of its text.
fn mutate(rng: &mut Rng, seed: &Value) -> Vec<u8> {
    if rng.below(2) == 0 {
        let mut value = seed.clone();
        for _ in 0..=rng.below(3) {
            mutate_value(rng, &mut value);
        }
        serde_json::to_vec(&value).expect("json")
    } else {
        mutate_bytes(rng, &serde_json::to_vec(seed).expect("json"))
    }
}

/// The error kinds bad input may give; anything else (Internal above all) is a bug.
fn check_error(case: usize, error: &Error, what: &str) {
    assert!(
        matches!(error, Error::InvalidArgument(_) | Error::NotFound(_)),
        "case {case}: {error:?}"
    );
    assert!(
        error.to_string().contains(what),
        "case {case}: {error} does not name {what}"
    );
}

#[test]
fn mutated_manifests_indexes_and_configs_are_answered_not_panicked_on() {
    let mut rng = Rng::new(0x6f63_6921);
    let (mut parsed, mut refused) = (0, 0);
    for (seed, media_type) in seeds() {
        for case in 0..CASES_PER_SEED {
            let input = mutate(&mut rng, &seed);
            let what = "sha256:fuzz";
            let (outcome, peak) = no_panic(media_type, case, &input, || {
                peak_heap(|| parse(&input, media_type, what))
            });
            let bound = PARSER_HEAP_BASE + PARSER_HEAP_PER_BYTE * input.len();
            assert!(
                peak <= bound,
                "case {case}: {peak} bytes of heap for {} bytes",
                input.len()
            );
            match outcome {
                Ok(()) => parsed += 1,
                Err(e) => {
                    check_error(case, &e, what);
                    refused += 1;
                }
            }
        }
    }
    let total = parsed + refused;
    assert!(
        parsed > total / 10 && refused > total / 10,
        "{parsed} parsed, {refused} refused"
    );
}

/// Parses as a pull would: a manifest or index (then the platform choice), or a config.
fn parse(input: &[u8], media_type: &str, what: &str) -> Result<(), Error> {
    if media_type == "config" {
        return parse_config(input, what).map(drop);
    }
    match parse_manifest(input, media_type, what)? {
        Parsed::Index(entries) => choose_platform(&entries, &host_platform(), what).map(drop),
        Parsed::Image { .. } => Ok(()),
    }
}
