//! Pulls from a registry that fails, against a real berthd and a real
//! docker-registry behind a fault-injecting proxy ([`common::recorder`]): a
//! connection reset mid-blob resumes with a Range request, as often as each
//! attempt gets further; 429 and 503 are
//! retried after the wait the registry asks for; mirrors that refuse
//! connections, keep answering 503, never answer or stall mid-blob fall
//! through to the upstream, which resumes the blob; a blob longer than its descriptor is
//! refused naming it; a redirect loop is refused as one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::Code;

use common::recorder::{Answer, Fault, Recorded, Recorder};
use common::*;

/// An image with a 1 MiB layer (stored uncompressed, so its bytes are
/// random and a cut lands in the middle of them) between two small ones.
fn image_with_big_layer(seed: u64) -> Image {
    Image::oci()
        .layer(Layer::new().file("small.marker", "small").gzip())
        .layer(
            Layer::new()
                .file("big", noise(1 << 20, seed))
                .uncompressed(),
        )
        .layer(Layer::new().file("last.marker", "last").gzip())
        .build()
}

fn is_blob_get(request: &Recorded, digest: &str) -> bool {
    request.method == "GET" && request.target.ends_with(&format!("/blobs/{digest}"))
}

/// Points the bed's registry at `server` (a proxy in front of it), with
/// `mirrors` before it.
fn route_through(bed: &TestBed, server: &str, mirrors: &[&str]) {
    bed.env
        .write_hosts_toml(&bed.registry.host(), server, mirrors);
}

/// Restarts berthd with a stall timeout of `seconds`.
async fn with_stall_timeout(bed: &mut TestBed, seconds: u64) {
    let config = std::fs::read_to_string(&bed.env.config).unwrap();
    std::fs::write(
        &bed.env.config,
        format!("{config}stall_timeout_seconds = {seconds}\n"),
    )
    .unwrap();
    bed.restart_berthd().await;
}

/// The committed blob `digest` hashes to `digest`, and nothing is left in
/// ingest.
fn assert_committed_intact(bed: &TestBed, digest: &str) {
    let data = std::fs::read(bed.env.blob_path(digest)).expect("committed blob");
    assert_eq!(sha256_digest(&data), digest);
    assert!(
        walk(&bed.env.ingest_dir()).iter().all(|p| p.is_dir()),
        "content/ingest not empty"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_mid_blob_resumes_with_a_range_request() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = image_with_big_layer(41);
    let big = image.layer_digests()[1].to_string();
    let reference = bed.push(&image, "test/reset", "v1").await;
    let upstream = bed.registry.addr();
    // Every response for the big blob is reset after 300 KiB: the 1 MiB
    // blob comes in four pieces, each resumed where the last one broke.
    let proxy = {
        let big = big.clone();
        Recorder::start(move |request| {
            if is_blob_get(request, &big) {
                Answer::ForwardCut {
                    upstream,
                    after: 300 * 1024,
                    fault: Fault::Reset,
                }
            } else {
                Answer::Forward(upstream)
            }
        })
        .await
    };
    route_through(&bed, &proxy.url(), &[]);

    assert_eq!(bed.cri.pull(&reference).await.expect("pull"), image.id());
    let offsets: Vec<u64> = proxy
        .requests()
        .into_iter()
        .filter(|r| is_blob_get(r, &big))
        .map(|r| match r.header("range") {
            None => 0,
            Some(range) => range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|o| o.parse().ok())
                .unwrap_or_else(|| panic!("not a resume: {r:?}")),
        })
        .collect();
    // Four or more (as many as it takes: a slow reader may lose some of what
    // was sent), each further than the last.
    assert!(offsets.len() >= 4, "offsets asked for: {offsets:?}");
    assert_eq!(offsets[0], 0);
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]) && offsets.last() < Some(&image.layers[1].size()),
        "offsets asked for: {offsets:?}"
    );
    assert_committed_intact(&bed, &big);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_registry_is_retried_after_the_wait_it_asks_for() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = image_with_big_layer(42);
    let big = image.layer_digests()[1].to_string();
    let reference = bed.push(&image, "test/busy", "v1").await;
    let upstream = bed.registry.addr();
    let busy = Arc::new(AtomicUsize::new(0));
    let proxy = {
        let (big, busy) = (big.clone(), busy.clone());
        Recorder::start(move |request| {
            if !is_blob_get(request, &big) {
                return Answer::Forward(upstream);
            }
            match busy.fetch_add(1, Ordering::SeqCst) {
                0 => Answer::reply(429, &[("Retry-After", "1")], b"slow down"),
                1 => Answer::reply(503, &[("Retry-After", "1")], b"restarting"),
                _ => Answer::Forward(upstream),
            }
        })
        .await
    };
    route_through(&bed, &proxy.url(), &[]);

    let started = Instant::now();
    assert_eq!(bed.cri.pull(&reference).await.expect("pull"), image.id());
    // Two waits of the one second asked for, no more than a few.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(busy.load(Ordering::SeqCst), 3);
    assert_committed_intact(&bed, &big);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_mirrors_fall_through_to_the_upstream() {
    let Some(mut bed) = TestBed::start().await else {
        return;
    };
    with_stall_timeout(&mut bed, 2).await;
    let image = image_with_big_layer(43);
    let big = image.layer_digests()[1].to_string();
    let reference = bed.push(&image, "test/mirrors", "v1").await;
    let upstream = bed.registry.addr();
    // Refuses connections.
    let refusing = format!("http://127.0.0.1:{}", registry::free_port());
    // Always busy (and asks for no wait, to keep the test short).
    let busy = Recorder::start(|_| Answer::reply(503, &[("Retry-After", "0")], b"")).await;
    // Takes requests and never answers.
    let silent = Recorder::start(|_| Answer::Stall).await;
    // Serves everything but stalls a third of the way into the big blob.
    let stalling = {
        let big = big.clone();
        Recorder::start(move |request| {
            if is_blob_get(request, &big) {
                Answer::ForwardCut {
                    upstream,
                    after: 300 * 1024,
                    fault: Fault::Stall,
                }
            } else {
                Answer::Forward(upstream)
            }
        })
        .await
    };
    route_through(
        &bed,
        &bed.registry.url(),
        &[&refusing, &busy.url(), &silent.url(), &stalling.url()],
    );

    let started = Instant::now();
    assert_eq!(bed.cri.pull(&reference).await.expect("pull"), image.id());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The busy mirror was retried on the first request only (4 attempts),
    // the silent one waited for once: once failing, a host is asked last,
    // and the others never failed.
    assert_eq!(busy.requests().len(), 4, "{:?}", busy.requests());
    assert_eq!(silent.requests().len(), 1, "{:?}", silent.requests());
    let stalled: Vec<_> = stalling
        .requests()
        .into_iter()
        .filter(|r| is_blob_get(r, &big))
        .collect();
    assert_eq!(stalled.len(), 1, "{stalled:?}");
    // The upstream took over where the stalled mirror stopped.
    let upstream_gets: Vec<_> = bed
        .registry
        .blob_requests(&big)
        .await
        .into_iter()
        .filter(|e| e.method == "GET")
        .collect();
    let resumed = upstream_gets
        .iter()
        .find(|e| e.status == 206)
        .unwrap_or_else(|| panic!("no ranged GET of the big blob upstream: {upstream_gets:?}"));
    assert!(resumed.bytes < image.layers[1].size(), "{resumed:?}");
    assert_committed_intact(&bed, &big);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_longer_than_its_descriptor_is_refused() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = image_with_big_layer(44);
    let big = image.layer_digests()[1].to_string();
    let reference = bed.push(&image, "test/long", "v1").await;
    let upstream = bed.registry.addr();
    let mut too_long = image.layers[1].data.clone();
    too_long.extend_from_slice(&noise(256 * 1024, 45));
    for declared in [true, false] {
        let proxy = {
            let (big, too_long) = (big.clone(), too_long.clone());
            Recorder::start(move |request| {
                if !is_blob_get(request, &big) {
                    Answer::Forward(upstream)
                } else if declared {
                    Answer::reply(200, &[], &too_long)
                } else {
                    Answer::Unsized(too_long.clone())
                }
            })
            .await
        };
        route_through(&bed, &proxy.url(), &[]);
        let error = bed
            .cri
            .pull(&reference)
            .await
            .expect_err("a blob longer than its descriptor");
        assert_error(&error, Code::DataLoss, &[&big, "descriptor"]);
        assert!(
            !bed.env.blob_path(&big).exists(),
            "declared length {declared}"
        );
        // (Other layers cut short by the failure may stay, to be resumed.)
        assert!(
            !bed.env.ingest_dir().join(hex_of(&big)).exists(),
            "the refused blob was kept in ingest (declared length {declared})"
        );
        assert!(bed.cri.list_images().await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_loop_is_refused_as_one() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = image_with_big_layer(46);
    let big = image.layer_digests()[1].to_string();
    let reference = bed.push(&image, "test/loop", "v1").await;
    let upstream = bed.registry.addr();
    let proxy = {
        let big = big.clone();
        Recorder::start(move |request| {
            if is_blob_get(request, &big) {
                Answer::reply(302, &[("Location", "/storage/a")], b"")
            } else if request.target == "/storage/a" {
                Answer::reply(307, &[("Location", "/storage/b")], b"")
            } else if request.target == "/storage/b" {
                Answer::reply(302, &[("Location", "/storage/a")], b"")
            } else {
                Answer::Forward(upstream)
            }
        })
        .await
    };
    route_through(&bed, &proxy.url(), &[]);

    let error = bed.cri.pull(&reference).await.expect_err("a redirect loop");
    assert_error(
        &error,
        Code::Unavailable,
        &["redirect loop", &format!("/blobs/{big}"), "/storage/a"],
    );
    // Stopped when it came round (a, b, then a again is refused), not after
    // ten redirects, and not retried: a loop does not heal itself.
    let storage = proxy
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/storage/"))
        .count();
    assert_eq!(storage, 2, "{:?}", proxy.requests());
}
