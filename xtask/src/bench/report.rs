//! The bench's Markdown report: the tables of `target/bench/bench.md`.

use super::*;

pub(super) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(super) fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

pub(super) fn markdown(report: &Report) -> String {
    let plan = &report.plan;
    let mut text = String::new();
    let _ = writeln!(text, "# `cargo xtask bench` ({})\n", report.mode);
    let _ = writeln!(
        text,
        "Commit `{}`, {} CPU(s), {}. {} repetition(s), medians; {} s warm-up then {} s \
         per run; async: {} enqueued per run.\n",
        report.commit,
        report.cores,
        report.pinning,
        plan.repetitions,
        plan.warmup_secs,
        plan.duration_secs,
        plan.async_count
    );
    let _ = writeln!(
        text,
        "Control plane: first healthy answer {:.1} ms after spawn; idle RSS {:.1} MiB; \
         after all scenarios (every record retained, TTL 5 minutes) RSS {:.1} MiB, peak \
         {:.1} MiB. The RSS columns below are read after each row's runs, so they grow \
         with the records of all runs before, in run order (repetition, concurrency, \
         scenario).\n",
        report.startup.time_to_healthy_ms,
        mib(report.startup.idle_rss_kb),
        mib(report.at_end.rss_kb),
        mib(report.at_end.peak_rss_kb),
    );
    text.push_str(
        "| scenario | conc | req/s | p50 us | p99 us | errors | enqueue/s | req/s vs echo | \
         p50 vs echo |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} |",
            row.scenario.name(),
            row.concurrency,
            row.req_per_sec,
            row.p50_us,
            row.p99_us,
            row.errors,
            optional(row.enqueue_per_sec, 0),
            optional(row.throughput_vs_echo, 2),
            optional(row.p50_vs_echo, 2),
        );
    }
    text.push_str(
        "\n| scenario | conc | CP CPU us/req | echo CPU us/req | CP CPU vs echo CPU | \
         loadgen core % | servers core % | CP peak RSS MiB | CP RSS MiB |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in &report.rows {
        let _ = writeln!(
            text,
            "| {} | {} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.1} | {:.1} |",
            row.scenario.name(),
            row.concurrency,
            row.control_plane_cpu_us_per_request,
            row.echo_cpu_us_per_request,
            optional(row.cpu_vs_echo, 2),
            row.loadgen_busy_percent,
            row.servers_busy_percent,
            mib(row.peak_rss_kb),
            mib(row.rss_kb),
        );
    }
    text.push_str(
        "\nasync POOL: req/s is completions per second from the first enqueue to the last \
         terminal execution; p50/p99 are `finishedAt - createdAt` of sampled records \
         (millisecond timestamps). CPU per request divides the CPU time of the measured \
         window by its requests (for async: by the executions). \"CP CPU vs echo CPU\" is \
         the control plane's CPU per request over the echo endpoint's in the direct run at \
         the same concurrency; in the bare proxy's row \"CP CPU\" is the proxy's (bench-echo \
         forwarding each request to the echo on a connection of its own: two HTTP \
         exchanges and nothing else). \"core %\" is CPU time over the window in percent of one \
         core: loadgen near 100 % means loadgen, not the servers, set the pace.\n\n",
    );
    let memory = &report.memory;
    let _ = writeln!(
        text,
        "Memory: {} s of sync LOCAL load at concurrency {} on a fresh control plane \
         retained {} finished records; RSS {:.1} -> {:.1} MiB (peak {:.1} MiB): \
         **{:.0} bytes per retained record** (each keeps a {}-byte output).",
        memory.secs,
        memory.concurrency,
        memory.records,
        mib(memory.rss_before_kb),
        mib(memory.rss_after_kb),
        mib(memory.peak_rss_kb),
        memory.bytes_per_record,
        memory.output_bytes
    );
    text
}
