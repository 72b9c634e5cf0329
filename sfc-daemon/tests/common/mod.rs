//! A raw HTTP/1.1 client, an OpenMetrics checker and the process RSS, for the tests.
#![allow(dead_code)] // each test binary uses part of it

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub took: Duration,
}

/// `method path`, answered in full (the server closes) within `limit`, or a panic.
pub async fn request(addr: SocketAddr, method: &str, path: &str, limit: Duration) -> Reply {
    let start = Instant::now();
    let raw = timeout(limit, async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within {limit:?}"))
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let took = start.elapsed();
    let raw = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    Reply {
        status: status.expect("a status line"),
        head: head.to_string(),
        body: body.to_string(),
        took,
    }
}

pub async fn get(addr: SocketAddr, path: &str, limit: Duration) -> Reply {
    request(addr, "GET", path, limit).await
}

/// Resident set size of this process (the server runs in it).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Checks `text` against the OpenMetrics text format (the parts this endpoint uses) and
/// returns its samples, label values unescaped. Panics with the offending line.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let body = text.strip_suffix("# EOF\n").expect("ends with `# EOF`");
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut current = String::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        let fail = |why: &str| -> ! { panic!("{why}: {line:?}") };
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            let rest = parts.next().unwrap_or("");
            if !is_name(name) {
                fail("bad family name");
            }
            if name != current {
                // A family's metadata and samples are contiguous.
                if kinds.contains_key(name) {
                    fail("family seen before");
                }
                kinds.insert(name.to_string(), "unknown".into());
                current = name.to_string();
            }
            match keyword {
                "HELP" => {}
                "UNIT" if name.ends_with(&format!("_{rest}")) => {}
                "TYPE" if ["counter", "gauge", "histogram"].contains(&rest) => {
                    kinds.insert(name.to_string(), rest.to_string());
                }
                _ => fail("bad metadata"),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| fail("no value"));
        let name = &line[..name_end];
        let suffixes: &[&str] = match kinds.get(&current).map(String::as_str) {
            Some("counter") => &["_total", "_created"],
            Some("histogram") => &["_bucket", "_sum", "_count", "_created"],
            _ => &[""],
        };
        if !suffixes.iter().any(|s| name == format!("{current}{s}")) {
            fail("sample outside its family");
        }
        let (labels, rest) = parse_labels(&line[name_end..]).unwrap_or_else(|| fail("labels"));
        let value = rest.strip_prefix(' ').unwrap_or_else(|| fail("no value"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| fail("bad value")),
        };
        if name.ends_with("_bucket") && !labels.iter().any(|(k, _)| k == "le") {
            fail("bucket without le");
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{k="v",...}` (or nothing) at the start of `s`; the labels and what follows.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let Some(mut s) = s.strip_prefix('{') else {
        return Some((Vec::new(), s));
    };
    let mut labels = Vec::new();
    loop {
        let (key, rest) = s.split_once("=\"")?;
        if !is_name(key) {
            return None;
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    c @ ('\\' | '"') => c,
                    _ => return None,
                }),
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = &rest[end + 1..];
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        s = s.strip_prefix(',')?;
    }
}
