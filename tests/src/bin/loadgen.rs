//! Load generator on the native driver.
//!
//! Starts the reference server as a child process (from the same target directory) with
//! raised per-IP/per-user/rate limits, opens `--connections` subscribed clients spread over
//! `--channels`, publishes `--rate` messages/s from `--publishers` extra connections for
//! `--duration` seconds, then prints connections held, deliveries/s, publish→deliver
//! latency percentiles and the server's RSS per connection.
//!
//! ```text
//! cargo build --release -p server-reference -p tests
//! target/release/loadgen --connections 1000 --channels 1 --rate 100 --duration 10
//! ```

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use server_reference::Claims;
use tidings::native::TidingsClient;
use tidings::Event;

#[derive(Parser, Debug, Clone)]
#[command(about = "Tidings load generator")]
struct Args {
    /// Subscribed client connections.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Channels the subscribers are spread over (connection i joins channel i % channels).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Publications per second, in total.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Publisher connections (the rate is split between them).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Bytes of filler in each message.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Use a running server at this ws:// URL instead of starting one (RSS is then
    /// measured only with --server-pid).
    #[arg(long)]
    server_url: Option<String>,
    /// PID of the running server, for RSS figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// JWT secret of the server.
    #[arg(long, default_value = "loadgen-secret")]
    jwt_secret: String,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Server {
    child: Option<Child>,
    pid: Option<u32>,
    url: String,
    flags: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_server(args: &Args) -> Server {
    if let Some(url) = &args.server_url {
        return Server {
            child: None,
            pid: args.server_pid,
            url: url.clone(),
            flags: vec!["(external server)".into()],
        };
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.with_file_name("server-reference");
    if !bin.exists() {
        eprintln!(
            "{} not found: build it first with `cargo build --release -p server-reference -p tests`",
            bin.display()
        );
        std::process::exit(2);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let flags: Vec<String> = vec![
        format!("--bind=127.0.0.1:{port}"),
        format!("--jwt-secret={}", args.jwt_secret),
        format!(
            "--max-connections-per-ip={}",
            args.connections + args.publishers + 100
        ),
        "--max-connections-per-user=5".into(),
        "--messages-per-second=100000".into(),
    ];
    let child = Command::new(&bin)
        .args(&flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start server");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child: Some(child),
        pid: Some(pid),
        url: format!("ws://127.0.0.1:{port}/ws"),
        flags,
    }
}

fn token(secret: &str, user: &str) -> String {
    server_reference::mint_token(
        secret,
        &Claims {
            sub: user.into(),
            exp: None,
            channels: vec!["load:*".into()],
            publish: vec!["load:*".into()],
            info: None,
        },
    )
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let server = start_server(&args);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.pid.and_then(rss_kib);
    let origin = Instant::now();

    // Subscribers, connected in waves so the accept queue is not overrun.
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let recording = Arc::new(AtomicBool::new(false));
    let mut subscribers = Vec::with_capacity(args.connections);
    let connect_started = Instant::now();
    for wave in (0..args.connections).collect::<Vec<_>>().chunks(250) {
        let mut joins = Vec::new();
        for &i in wave {
            let url = server.url.clone();
            let secret = args.jwt_secret.clone();
            let channel = format!("load:{}", i % args.channels.max(1));
            let delivered = delivered.clone();
            let latencies = latencies.clone();
            let recording = recording.clone();
            joins.push(tokio::spawn(async move {
                let client = TidingsClient::builder(url)
                    .token(token(&secret, &format!("user-{i}")))
                    .build();
                let mut events = client.events();
                client.connect().await.expect("connect");
                client
                    .channel(&channel)
                    .subscribe()
                    .await
                    .expect("subscribe");
                tokio::spawn(async move {
                    let mut local = Vec::new();
                    while let Some(batch) = events.next_batch().await {
                        for event in batch.iter() {
                            if let Event::Publication(p) = event {
                                if let Some(sent) = p.data.value()["t"].as_u64() {
                                    let now = origin.elapsed().as_micros() as u64;
                                    delivered.fetch_add(1, Ordering::Relaxed);
                                    if recording.load(Ordering::Relaxed) {
                                        local.push(now.saturating_sub(sent));
                                    }
                                }
                            }
                        }
                        if local.len() >= 256 {
                            latencies
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .append(&mut local);
                        }
                    }
                    latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .append(&mut local);
                });
                client
            }));
        }
        for join in joins {
            subscribers.push(join.await.expect("subscriber"));
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.pid.and_then(rss_kib);

    // Publishers.
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let client = TidingsClient::builder(server.url.clone())
            .token(token(&args.jwt_secret, &format!("publisher-{p}")))
            .configure(|o| o.outbox.max_messages = 100_000)
            .build();
        client.connect().await.expect("publisher connect");
        publishers.push(client);
    }
    recording.store(true, Ordering::Relaxed);
    let delivered_before = delivered.load(Ordering::Relaxed);
    let filler = "x".repeat(args.payload_bytes);
    let published = Arc::new(AtomicU64::new(0));
    let publish_started = Instant::now();
    let mut tasks = Vec::new();
    if args.rate > 0 {
        let per_publisher = (args.rate as f64 / args.publishers as f64).max(0.001);
        for (p, client) in publishers.iter().enumerate() {
            let client = client.clone();
            let filler = filler.clone();
            let published = published.clone();
            let channels = args.channels.max(1);
            let publishers_count = args.publishers;
            let duration = Duration::from_secs(args.duration);
            tasks.push(tokio::spawn(async move {
                let interval = Duration::from_secs_f64(1.0 / per_publisher);
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < duration {
                    ticker.tick().await;
                    let channel =
                        format!("load:{}", (n as usize * publishers_count + p) % channels);
                    let t = origin.elapsed().as_micros() as u64;
                    if client
                        .publish_queued(&channel, "load.tick", &json!({ "t": t, "f": filler }))
                        .await
                        .is_ok()
                    {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            }));
        }
    } else {
        tokio::time::sleep(Duration::from_secs(args.duration)).await;
    }
    for task in tasks {
        let _ = task.await;
    }
    let publish_secs = publish_started.elapsed().as_secs_f64();
    // Let in-flight deliveries land.
    let mut last = delivered.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    recording.store(false, Ordering::Relaxed);
    let total_secs = publish_started.elapsed().as_secs_f64();
    let deliveries = delivered.load(Ordering::Relaxed) - delivered_before;
    let mut connected = 0;
    for client in &subscribers {
        if client.state() == tidings::ConnectionState::Connected {
            connected += 1;
        }
    }
    let rss_end = server.pid.and_then(rss_kib);
    for client in subscribers.iter().chain(publishers.iter()) {
        client.close().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lat.sort_unstable();

    println!("loadgen: {args:?}");
    println!("server flags: {}", server.flags.join(" "));
    println!(
        "connections held: {connected} / {} (opened in {connect_secs:.1} s)",
        args.connections
    );
    println!(
        "published: {} in {publish_secs:.1} s ({:.0}/s)",
        published.load(Ordering::Relaxed),
        published.load(Ordering::Relaxed) as f64 / publish_secs
    );
    println!(
        "deliveries: {deliveries} ({:.0}/s over {publish_secs:.1} s of publishing; {:.0}/s including the {:.1} s drain)",
        deliveries as f64 / publish_secs,
        deliveries as f64 / total_secs,
        total_secs - publish_secs
    );
    println!(
        "publish->deliver latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n = {})",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        lat.len()
    );
    match (rss_before, rss_after, rss_end) {
        (Some(before), Some(after), Some(end)) => {
            let per = (after.saturating_sub(before)) as f64 / args.connections.max(1) as f64;
            println!(
                "server RSS: {before} KiB idle, {after} KiB with {} subscribed connections ({per:.2} KiB per connection), {end} KiB at the end",
                args.connections
            );
        }
        _ => println!("server RSS: not measured (no server pid)"),
    }
}
