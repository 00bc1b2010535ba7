//! The tests' fake AWS Marketplace Metering Service (`tests/support/fake_marketplace.rs`) as a
//! program, so the product can be run against it locally: `docker compose -f compose.yaml -f
//! docker/compose.marketplace-fake.yaml up` (see docs/FAKE-MARKETPLACE.md), or
//! `cargo run --example fake_marketplace`.
//!
//! Settings (environment): `FAKE_MARKETPLACE_ADDR` (default `0.0.0.0:8080`),
//! `FAKE_MARKETPLACE_PRODUCT_CODE` (default `prod-local-fake`), `FAKE_MARKETPLACE_DIMENSIONS`
//! (default the product's three, comma-separated). It signs RegisterUsage tokens with the test
//! key whose public half is `tests/fixtures/marketplace-test-key.pub.pem`, logs every metering
//! record it stores, and stops on SIGTERM or Ctrl-C with the totals AWS would bill.

#[path = "../tests/support/fake_marketplace.rs"]
mod fake_marketplace;

use std::net::SocketAddr;
use std::time::Duration;

use fake_marketplace::FakeMarketplace;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let addr = setting("FAKE_MARKETPLACE_ADDR", "0.0.0.0:8080");
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("FAKE_MARKETPLACE_ADDR={addr:?} is not an address like 0.0.0.0:8080");
        return std::process::ExitCode::from(2);
    };
    let product_code = setting("FAKE_MARKETPLACE_PRODUCT_CODE", "prod-local-fake");
    let dimensions = setting(
        "FAKE_MARKETPLACE_DIMENSIONS",
        "SecurityScans,ChatQuestions,DocumentAnalysis",
    );
    let dimensions: Vec<&str> = dimensions.split(',').map(str::trim).collect();
    let fake = match FakeMarketplace::start_on(addr, &product_code, &dimensions).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "fake AWS Marketplace Metering on {} (product {product_code}, dimensions {}); \
         point the product at it with AWS_ENDPOINT_URL_MARKETPLACE_METERING",
        fake.addr(),
        dimensions.join(",")
    );

    // PID 1 in a container gets no default SIGTERM handling: without this `docker stop` would
    // wait for its grace period and then kill the process.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut seen, mut registers) = (0, 0);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        if fake.register_calls() != registers {
            registers = fake.register_calls();
            println!("RegisterUsage calls: {registers}");
        }
        let records = fake.records();
        for r in records.iter().skip(seen) {
            println!(
                "MeterUsage record: task {} dimension {} hour {} quantity {} id {}",
                r.task,
                r.dimension,
                r.hour.format("%Y-%m-%dT%H:00Z"),
                r.quantity,
                r.metering_record_id
            );
        }
        seen = records.len();
    }
    for d in &dimensions {
        println!("total {d}: {}", fake.total(d));
    }
    std::process::ExitCode::SUCCESS
}
