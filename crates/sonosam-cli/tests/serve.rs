//! `sonosam serve` over real HTTP: the embedding of a BUSI image against the PyTorch golden,
//! the cache (a repeated image does not run the encoder), the models/health/metrics endpoints,
//! every error path (400, 413, 422, 503 under overload, static files confined to dist/), and
//! concurrent requests.

mod common;

use common::{metric, request, sample, start};
use sonosam_model::golden::{Golden, diff};
use sonosam_model::wire;

#[test]
fn embeddings_match_the_reference_and_are_cached() {
    let server = start(&[]);
    let port = server.port;
    assert_eq!(request(port, "GET", "/healthz", b"").0, 200);
    let (status, _, body) = request(port, "GET", "/api/v1/models", b"");
    assert_eq!(status, 200);
    let models: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models["models"][0]["id"], "litemedsam");
    assert_eq!(models["models"][0]["embedding_shape"], serde_json::json!([1, 256, 64, 64]));

    let image = sample("benign_93.png");
    let (status, head, body) = request(port, "POST", "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(head.contains(wire::CONTENT_TYPE));
    let (header, data) = wire::decode(&body).unwrap();
    assert_eq!(header.shape, vec![1, 256, 64, 64]);
    assert_eq!((header.geometry.orig_w, header.geometry.orig_h), (561, 466));
    let g = Golden::from_bytes(&std::fs::read(common::repo().join("../shared/golden/benign_93.safetensors")).unwrap(), "benign_93").unwrap();
    let (max, mean) = diff(&data, &g.f32("embedding"));
    eprintln!("served embedding vs golden: max {max:.2e}, mean {mean:.2e}");
    assert!(max <= 5e-4 && mean <= 2e-5, "max {max}, mean {mean}");
    assert_eq!(metric(port, "sonosam_cache_misses_total"), 1.0);

    // The same image again (f16 this time): from the cache, the encoder does not run.
    let (status, _, body) = request(port, "POST", "/api/v1/embeddings", &image);
    assert_eq!(status, 200);
    let (h16, d16) = wire::decode(&body).unwrap();
    assert_eq!(h16.dtype, "f16");
    assert!(body.len() < 2 * 256 * 64 * 64 + 4096);
    assert!(diff(&d16, &data).0 <= 0.01);
    assert_eq!(metric(port, "sonosam_cache_hits_total"), 1.0);
    assert_eq!(metric(port, "sonosam_encode_seconds_count"), 1.0);

    // Concurrent requests for different images all succeed (batched by the encoder thread).
    let images = ["malignant_12.png", "benign_3.png", "benign_189.png"];
    let handles: Vec<_> = images
        .iter()
        .map(|n| {
            let img = sample(n);
            std::thread::spawn(move || request(port, "POST", "/api/v1/embeddings", &img).0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let (_, _, body) = request(port, "GET", "/metrics", b"");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("sonosam_requests_total{endpoint=\"embeddings\",status=\"200\"} 5"), "{text}");

    // Simultaneous requests for one new image share a single encoding.
    let before = metric(port, "sonosam_encode_seconds_count");
    let img = sample("malignant_90.png");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let img = img.clone();
            std::thread::spawn(move || request(port, "POST", "/api/v1/embeddings", &img))
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.0 == 200));
    assert!(answers.windows(2).all(|w| w[0].2 == w[1].2), "identical embeddings");
    assert_eq!(metric(port, "sonosam_encode_seconds_count") - before, 1.0);
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let server = start(&["--max-body", "200000", "--max-pixels", "300000"]);
    let port = server.port;
    let json = |b: &[u8]| -> serde_json::Value { serde_json::from_slice(b).unwrap_or_default() };
    // Not an image.
    let (status, _, body) = request(port, "POST", "/api/v1/embeddings", b"this is not an image");
    assert_eq!(status, 400);
    assert!(json(&body)["error"].as_str().unwrap().contains("PNG, JPEG or BMP"));
    // Empty body, unknown dtype.
    assert_eq!(request(port, "POST", "/api/v1/embeddings", b"").0, 400);
    assert_eq!(request(port, "POST", "/api/v1/embeddings?dtype=f64", &sample("benign_93.png")).0, 400);
    // Too many pixels for this server (benign_93 is 561×466 = 261 426 px: fine; a 600×600 PNG is not).
    let mut big = Vec::new();
    image::RgbImage::new(600, 600)
        .write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Png)
        .unwrap();
    let (status, _, body) = request(port, "POST", "/api/v1/embeddings", &big);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"].as_str().unwrap().contains("600×600"));
    // A body over the limit.
    let (status, _, body) = request(port, "POST", "/api/v1/embeddings", &vec![0u8; 300_000]);
    assert_eq!(status, 413);
    assert_eq!(json(&body)["status"], 413);
    // Static files cannot escape dist/.
    let (status, _, _) = request(port, "GET", "/../Cargo.toml", b"");
    assert!(status == 404 || status == 400, "{status}");
    let (status, _, _) = request(port, "GET", "/%2e%2e/Cargo.toml", b"");
    assert!(status == 404 || status == 400, "{status}");
    assert_eq!(request(port, "GET", "/", b"").0, 200);
    // Truncated PNG: a clear error, and the server goes on.
    let truncated = &sample("benign_93.png")[..5000];
    let (status, _, _) = request(port, "POST", "/api/v1/embeddings", truncated);
    assert_eq!(status, 400);
    assert_eq!(request(port, "GET", "/healthz", b"").0, 200);
}

#[test]
fn overload_is_answered_with_503_and_retry_after() {
    // One queue slot, no cache: of many simultaneous new images, some must be turned away.
    let server = start(&["--queue", "1", "--batch", "1", "--cache-entries", "0"]);
    let port = server.port;
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let img = common::distinct_image(i as u8);
            std::thread::spawn(move || {
                let (status, head, _) = request(port, "POST", "/api/v1/embeddings", &img);
                (status, head.to_ascii_lowercase().contains("retry-after: 1"))
            })
        })
        .collect();
    let results: Vec<(u16, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("overload: {results:?}");
    assert!(results.iter().all(|&(s, _)| s == 200 || s == 503), "{results:?}");
    assert!(results.iter().any(|&(s, _)| s == 200));
    assert!(results.iter().any(|&(s, _)| s == 503));
    assert!(results.iter().filter(|r| r.0 == 503).all(|r| r.1));
}

/// A release build's precompressed copies are what browsers that accept them download.
#[test]
fn app_files_are_sent_precompressed() {
    let server = start(&[]);
    let dist = common::repo().join("target/serve-test-dist");
    std::fs::write(dist.join("app.wasm"), b"\0asm plain bytes").unwrap();
    std::fs::write(dist.join("app.wasm.gz"), b"gzip bytes").unwrap();
    std::fs::write(dist.join("app.wasm.br"), b"brotli bytes").unwrap();
    let host = format!("Host: 127.0.0.1:{}\r\n", server.port);
    let get = |accept: &str| common::request_with(server.port, "GET", "/app.wasm", &format!("{host}{accept}"), b"");
    let (status, head, body) = get("Accept-Encoding: gzip, deflate, br\r\n");
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-encoding: br"), "{head}");
    assert!(head.contains("content-type: application/wasm"), "{head}");
    assert_eq!(body, b"brotli bytes");
    let (_, head, body) = get("Accept-Encoding: gzip\r\n");
    assert!(head.to_ascii_lowercase().contains("content-encoding: gzip"), "{head}");
    assert_eq!(body, b"gzip bytes");
    let (_, head, body) = get("");
    assert!(!head.to_ascii_lowercase().contains("content-encoding"), "{head}");
    assert_eq!(body, b"\0asm plain bytes");
}

/// DICOM bodies (issue 16): a calibrated ultrasound file and frame 10 of a 30-frame cine are
/// encoded (the frame's own size, each frame its own cache entry); frames that do not exist, unsupported syntaxes, absurd headers and
/// a frame number for a PNG are clear errors.
#[test]
fn dicom_bodies_are_encoded_and_bad_ones_refused() {
    let data = common::repo().join("target/test-data/dicom");
    assert!(data.join("reference.json").is_file(), "no DICOM test data: run scripts/dicom-test-data.sh");
    let file = |name: &str| std::fs::read(data.join(name)).unwrap();
    let server = start(&[]);
    let port = server.port;
    let (status, _, body) = request(port, "POST", "/api/v1/embeddings?dtype=f32", &file("us_calibrated.dcm"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (header, _) = wire::decode(&body).unwrap();
    assert_eq!((header.geometry.orig_w, header.geometry.orig_h), (320, 240));

    let cine = file("examples_ybr_color.dcm");
    let (status, _, ten) = request(port, "POST", "/api/v1/embeddings?frame=10&dtype=f32", &cine);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&ten));
    let (status, _, zero) = request(port, "POST", "/api/v1/embeddings?dtype=f32", &cine);
    assert_eq!(status, 200);
    let ((h10, d10), (h0, d0)) = (wire::decode(&ten).unwrap(), wire::decode(&zero).unwrap());
    assert_ne!(h10.image_sha256, h0.image_sha256, "each frame is its own image");
    assert!(diff(&d10, &d0).0 > 0.0, "frames 0 and 10 differ");
    assert_eq!(metric(port, "sonosam_cache_misses_total"), 3.0);
    let (status, _, _) = request(port, "POST", "/api/v1/embeddings?frame=10&dtype=f32", &cine);
    assert_eq!((status, metric(port, "sonosam_cache_hits_total")), (200, 1.0));

    let refused = |query: &str, body: &[u8], code: u16, needle: &str| {
        let (status, _, answer) = request(port, "POST", &format!("/api/v1/embeddings{query}"), body);
        let text = String::from_utf8_lossy(&answer);
        assert!(status == code && text.contains(needle), "{query}: {status} {text}");
    };
    refused("?frame=30", &cine, 400, "frame 30 does not exist");
    refused("", &file("JPEG2000.dcm"), 415, "JPEG 2000");
    refused("", &file("absurd_frames.dcm"), 422, "1000000 frames");
    refused("", &file("truncated_cine.dcm"), 400, "truncated");
    refused("?frame=1", &sample("benign_93.png"), 400, "DICOM");
    refused("?frame=x", &cine, 400, "frame must be");
}
