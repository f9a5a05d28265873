//! `sonosam loadtest`: N concurrent clients post BUSI images to a running `sonosam serve` — or
//! to several replicas in turn (`--url` repeated) — bounded in requests and time; reports
//! throughput, latency percentiles, status counts, and from the servers' /metrics the cache
//! hit ratio, the images each replica encoded, the shared-cache hits and peak memory.

use anyhow::{Context, anyhow, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use sonosam_model::mask::percentile;

use crate::CliResult;

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    /// The server, e.g. http://127.0.0.1:8080 (plain HTTP); repeat it for several replicas
    /// (requests go to each in turn).
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Folder of images to post (PNG/JPEG/BMP; `*_mask*` files are skipped).
    #[arg(long, default_value = "www/samples")]
    pub images: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Stop after this many seconds even if requests remain.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

fn host_port(url: &str) -> CliResult<(String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?
        .trim_end_matches('/');
    let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "80"));
    Ok((h.to_string(), p.parse().map_err(|_| anyhow!("{url}: bad port"))?))
}

fn post(host: &str, port: u16, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let method = if body.is_empty() { "GET" } else { "POST" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let status = String::from_utf8_lossy(raw.get(..16).unwrap_or(&raw))
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((status, raw))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

pub fn run(args: LoadtestArgs) -> CliResult<()> {
    let targets = args.urls.iter().map(|u| host_port(u)).collect::<CliResult<Vec<_>>>()?;
    let mut images = Vec::new();
    for e in std::fs::read_dir(&args.images).with_context(|| format!("{}", args.images.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_lowercase();
        if !name.contains("_mask") && [".png", ".jpg", ".jpeg", ".bmp"].iter().any(|x| name.ends_with(x)) {
            images.push(std::fs::read(&p).with_context(|| format!("{}", p.display()))?);
        }
    }
    if images.is_empty() {
        bail!("no images in {}", args.images.display());
    }
    let metrics_text = |(h, p): &(String, u16)| post(h, *p, "/metrics", b"").map(|(_, b)| String::from_utf8_lossy(&b).to_string());
    let before = targets
        .iter()
        .zip(&args.urls)
        .map(|(t, u)| metrics_text(t).with_context(|| format!("cannot reach {u}")))
        .collect::<CliResult<Vec<_>>>()?;
    let targets = Arc::new(targets);
    let images = Arc::new(images);
    let next = Arc::new(Mutex::new(0usize));
    let results = Arc::new(Mutex::new(Vec::<(u16, f64)>::new()));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let (images, next, results, targets) = (images.clone(), next.clone(), results.clone(), targets.clone());
            let total = args.requests;
            std::thread::spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    if *n >= total || Instant::now() > deadline {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let t = Instant::now();
                let (host, port) = &targets[i % targets.len()];
                let status = post(host, *port, "/api/v1/embeddings", &images[i % images.len()]).map(|r| r.0).unwrap_or(0);
                results.lock().unwrap().push((status, t.elapsed().as_secs_f64() * 1e3));
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let wall = t0.elapsed().as_secs_f64();
    let after: Vec<String> = targets.iter().map(|t| metrics_text(t).unwrap_or_default()).collect();
    // A counter's increase during the run, per replica.
    let delta = |name: &str| -> Vec<f64> { before.iter().zip(&after).map(|(b, a)| metric(a, name) - metric(b, name)).collect() };
    let results = results.lock().unwrap().clone();
    let mut ok: Vec<f64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    results.iter().for_each(|r| *statuses.entry(r.0).or_default() += 1);
    let hits: f64 = delta("sonosam_cache_hits_total").iter().sum();
    let misses: f64 = delta("sonosam_cache_misses_total").iter().sum();
    let encodings = delta("sonosam_encodings_total");
    let shared_hits: f64 = delta("sonosam_shared_cache_hits_total").iter().sum();
    println!(
        "loadtest: {} requests by {} clients to {} replica(s) in {wall:.1} s ({} distinct images)",
        results.len(),
        args.clients,
        targets.len(),
        images.len()
    );
    println!("  throughput   {:.2} requests/s ({:.2} answered 200/s)", results.len() as f64 / wall, ok.len() as f64 / wall);
    if !ok.is_empty() {
        println!(
            "  latency 200  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile(&mut ok.clone(), 50.0),
            percentile(&mut ok.clone(), 99.0),
            ok.iter().cloned().fold(0.0, f64::max)
        );
    }
    ok.clear();
    println!("  statuses     {statuses:?} (0 = connection error)");
    println!("  cache        {hits} hits, {misses} misses (hit ratio {:.2}) in the replicas' memory/disk", hits / (hits + misses).max(1.0));
    println!(
        "  encodings    {} in all ({}); shared-cache hits {shared_hits}",
        encodings.iter().sum::<f64>(),
        encodings.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" + ")
    );
    let peak = after.iter().map(|a| metric(a, "sonosam_process_peak_resident_bytes")).fold(0.0, f64::max);
    if peak > 0.0 {
        println!("  server peak resident memory {:.0} MB", peak / 1e6);
    }
    if statuses.keys().any(|&s| s != 200 && s != 503) {
        bail!("some requests failed with other errors than 503 (overload)");
    }
    Ok(())
}
