//! Where the benches' processes talk: the broker they are given and free
//! local ports for the servers they start.

/// The broker from `STRATA_BENCH_KAFKA`, or `None` after saying how to set
/// it.
pub fn bench_kafka() -> Option<String> {
    let kafka = std::env::var("STRATA_BENCH_KAFKA").ok();
    if kafka.is_none() {
        eprintln!("set STRATA_BENCH_KAFKA=host:port (scripts/bench starts a broker and sets it)");
    }
    kafka
}

/// The broker's process id, when the bench's runner says it
/// (`STRATA_BENCH_BROKER_PID`): a bench on a 2-core machine shares it with
/// the broker, whose share it then reports.
pub fn bench_broker_pid() -> Option<u32> {
    std::env::var("STRATA_BENCH_BROKER_PID").ok()?.parse().ok()
}

/// A local TCP port nobody listens on (now).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
