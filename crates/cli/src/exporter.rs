//! The mount's metrics: a Prometheus recorder for the whole process, and `--metrics
//! ADDR`, a small HTTP endpoint that serves it (JuiceFS's default address and labels,
//! so dashboards built for it need only the new metric names).
//!
//! The endpoint runs on a thread of its own with blocking sockets: a scrape every few
//! seconds does not need the async runtime, and a slow scraper cannot hold a worker
//! the file system needs. Every series carries the labels `vol_name` and `mp`.

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Latency buckets, in seconds, of every histogram: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process's recorder and returns the handle that renders it.
pub fn install(volume: &str, mountpoint: &str) -> Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .context("metrics buckets")?
        .add_global_label("vol_name", volume)
        .add_global_label("mp", mountpoint)
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // Histograms keep each sample until upkeep folds it into the buckets: without
    // it, a mount nobody scrapes would grow by every operation it serves.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("nectar-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP);
            upkeep.run_upkeep();
        })?;
    Ok(handle)
}

/// Serves `handle` at `http://ADDR/metrics`. A busy port is not an error (several
/// mounts on one node all default to the same address): another free port on the same
/// address is used, and the log says which.
pub fn serve(addr: &str, handle: PrometheusHandle) -> Result<SocketAddr> {
    let wanted = parse_addr(addr)?;
    let listener = match TcpListener::bind(wanted) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!("{wanted} is in use: metrics go to another port");
            TcpListener::bind(SocketAddr::new(wanted.ip(), 0))
                .with_context(|| format!("cannot listen on {} for metrics", wanted.ip()))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {wanted} for metrics")),
    };
    let local = listener.local_addr()?;
    tracing::info!("metrics are served at http://{local}/metrics");
    std::thread::Builder::new()
        .name("nectar-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = answer(conn, &handle) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })?;
    Ok(local)
}

/// The `--metrics` address, or an error that shows the form.
pub fn parse_addr(addr: &str) -> Result<SocketAddr> {
    addr.parse().with_context(|| {
        format!("--metrics {addr:?} is not an address like 127.0.0.1:9567 (an empty value turns it off)")
    })
}

/// Answers one HTTP/1.x request: `GET /metrics` (or `/`) gets the metrics, anything
/// else a 404; the connection is closed after the answer.
fn answer(conn: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" | "/" => ("200 OK", handle.render()),
        _ => ("404 Not Found", "not found: try /metrics\n".to_string()),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
