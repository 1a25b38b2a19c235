//! Rough cost of one decision on the host: `cargo run --release --example decide_cost`.
use std::time::Instant;

use gatehouse::config::compile;
use gatehouse::decision::decide;

fn main() {
    let secret = "6b0a1f4c2e9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080";
    let config = r#"{"issuer":"https://gatehouse.bench","audiences":["api"],"algorithms":["HS256"],"hmac_secret":{"env":"SECRET_KEY"},"rules":[{"prefix":"/api","require":{"any_of":["user"]}}],"forward":{"claims":{"sub":"sub"}}}"#;
    let policy = compile(config.as_bytes(), |_| Some(secret.to_string())).unwrap();
    let token = std::env::args().nth(1).expect("token");
    let headers: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/api/items".to_vec()),
        (":authority".into(), b"127.0.0.1:18000".to_vec()),
        ("user-agent".into(), b"wrk".to_vec()),
        ("authorization".into(), format!("Bearer {token}").into_bytes()),
        ("x-forwarded-proto".into(), b"http".to_vec()),
        (
            "x-request-id".into(),
            b"0b4f3e2a-7d1c-4b7e-9c11-3f1e0a2b7c55".to_vec(),
        ),
    ];
    let now = 1_795_640_000 + 10;
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let t = Instant::now();
    for _ in 0..n {
        let d = decide(&policy, b"GET", b"/api/items", &headers, now);
        std::hint::black_box(d);
    }
    println!("decide: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let v = gatehouse::token::verify(&policy.token, &token, now);
        let _ = std::hint::black_box(v);
    }
    println!("verify: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
