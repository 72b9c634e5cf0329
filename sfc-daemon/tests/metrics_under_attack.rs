//! The endpoint under the attacks found against the old hand-written server. Its own test
//! binary, so that nothing else runs in the process whose memory it measures.
mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{get, rss_bytes};
use sfc_daemon::observe::{
    metrics::{serve, Limits, Metrics, Status},
    snapshot::Snapshot,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{sleep, timeout},
};

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_stay_fast_and_memory_bounded_under_idle_garbage_slow_and_huge_clients() {
    let snapshot = Snapshot {
        outcomes: vec![("steered".into(), 1)],
        ..Default::default()
    };
    let status = Arc::new(Status::new());
    status.set_ready(None);
    let metrics = Arc::new(Metrics::new(Arc::new(Mutex::new(snapshot)), status, None));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, metrics));
    let limit = Duration::from_secs(1);
    assert_eq!(get(addr, "/metrics", limit).await.status, 200); // warm up
    let rss_before = rss_bytes();

    // 100 that send nothing, 100 that send garbage (half binary, half an endless method
    // token that keeps the parser waiting), all kept open.
    let mut held = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i >= 100 {
            let garbage: Vec<u8> = if i % 2 == 0 {
                (0..4096u32).map(|b| (b * 7 + 1) as u8).collect()
            } else {
                b"GARBAGE".repeat(500)
            };
            s.write_all(&garbage).await.unwrap();
        }
        held.push(s);
    }

    // One byte a second of a valid request; it would take ~40 s to finish.
    let trickler = tokio::spawn(async move {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        for b in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: yes\r\n\r\n" {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            sleep(Duration::from_secs(1)).await;
        }
        start.elapsed()
    });

    // A 64 MiB header line, as fast as possible, from one reused 64 KiB chunk (so the
    // client does not inflate this process's RSS).
    let flooder = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ")
            .await
            .unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0u64;
        for _ in 0..1024 {
            match timeout(Duration::from_secs(10), s.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len() as u64,
                _ => break,
            }
        }
        let mut answer = vec![0; 256];
        let n = timeout(Duration::from_secs(2), s.read(&mut answer))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        (sent, String::from_utf8_lossy(&answer[..n]).into_owned())
    });

    // Scrape all three routes every 200 ms, past the header timeout (so while the idle ones
    // are still held and after they are dropped), and watch this process's RSS.
    let until = Instant::now() + Limits::default().header_read_timeout + Duration::from_secs(2);
    let mut worst = [Duration::ZERO; 3];
    let mut rss_max = rss_before;
    let mut rounds = 0;
    while Instant::now() < until {
        for (i, path) in ["/metrics", "/healthz", "/readyz"].iter().enumerate() {
            let r = get(addr, path, limit).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            worst[i] = worst[i].max(r.took);
        }
        rss_max = rss_max.max(rss_bytes());
        rounds += 1;
        sleep(Duration::from_millis(200)).await;
    }

    let (sent, answer) = timeout(Duration::from_secs(30), flooder)
        .await
        .unwrap()
        .unwrap();
    let trickled = timeout(Duration::from_secs(30), trickler)
        .await
        .unwrap()
        .unwrap();
    // The server has closed the idle and garbage connections by now.
    let mut closed = 0;
    for s in &mut held {
        let mut buf = [0; 512];
        match timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                // An error answer (400) before the close.
                if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_secs(1), s.read(&mut buf)).await
                {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    rss_max = rss_max.max(rss_bytes());
    let grown = rss_max.saturating_sub(rss_before);

    println!("{rounds} rounds of scrapes; slowest answers:");
    println!("  /metrics {:?}", worst[0]);
    println!("  /healthz {:?}", worst[1]);
    println!("  /readyz  {:?}", worst[2]);
    println!(
        "flooder: {:.1} MiB written before the server hung up; it answered {:?}",
        sent as f64 / MIB as f64,
        answer.lines().next().unwrap_or("")
    );
    println!("trickler: cut after {trickled:?}");
    println!("idle/garbage connections closed by the server: {closed}/200");
    println!(
        "RSS: {} KiB before, {} KiB at most, grown {} KiB",
        rss_before / 1024,
        rss_max / 1024,
        grown / 1024
    );
    assert!(worst.iter().all(|w| *w < limit));
    assert!(sent < 64 * MIB, "the 64 MiB header was taken in full");
    assert!(trickled < Duration::from_secs(15), "{trickled:?}");
    assert_eq!(closed, 200);
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
}
