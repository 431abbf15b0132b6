//! The four-letter words (`ruok`, `srvr`, `stat`, `mntr`, `conf`, `envi`, `isro`, `cons`,
//! `wchs`): plain-text status answered on the client port when a connection's first four
//! bytes spell one, in ZooKeeper's output formats so existing scripts and monitoring parse
//! them. Words not in `4lw.commands.whitelist` get ZooKeeper's refusal text.

use crate::config::{ZooConfig, FOUR_LETTER_WORDS};
use crate::request_processor::RequestProcessor;

/// The version string reported to tools (ZooKeeper-compatible prefix, our name after it).
pub const VERSION: &str = "3.8.0-coordinator-0.1.0, built for the ZooKeeper 3.8 client protocol";

/// The word spelled by the first four bytes of a connection, if any.
pub fn detect(first: [u8; 4]) -> Option<&'static str> {
    let word = std::str::from_utf8(&first).ok()?;
    FOUR_LETTER_WORDS.iter().copied().find(|w| *w == word)
}

/// The full text answered to `word`.
pub fn answer(word: &str, p: &RequestProcessor, cfg: &ZooConfig, mode: &str) -> String {
    if !cfg.four_letter_whitelist.contains(word) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    let tree = p.tree();
    let stats = p.stats();
    let summary = || {
        format!(
            "Latency min/avg/max: {}/{:.4}/{}\nReceived: {}\nSent: {}\nConnections: {}\n\
             Outstanding: {}\nZxid: {:#x}\nMode: {mode}\nNode count: {}\n",
            stats.latency_min_ms,
            stats.latency_avg_ms(),
            stats.latency_max_ms,
            stats.packets_received,
            stats.packets_sent,
            p.connection_count(),
            p.outstanding(),
            tree.last_zxid(),
            tree.node_count()
        )
    };
    match word {
        "ruok" => "imok".into(),
        "isro" => "rw".into(),
        "srvr" => format!("Zookeeper version: {VERSION}\n{}", summary()),
        "stat" => format!(
            "Zookeeper version: {VERSION}\nClients:\n{}\n\n{}",
            p.connection_lines().join("\n"),
            summary()
        ),
        "cons" => format!("{}\n\n", p.connection_lines().join("\n")),
        "wchs" => format!(
            "{} connections watching {} paths\nTotal watches:{}\n",
            p.connection_count(),
            p.watch_count(),
            p.watch_count()
        ),
        "conf" => cfg.describe(),
        "envi" => format!(
            "Environment:\nzookeeper.version={VERSION}\nhost.name={}\nos.name={}\nos.arch={}\n\
             user.dir={}\n",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
        "mntr" => {
            let (open_fds, max_fds) = fd_counts();
            let lines: Vec<(&str, String)> = vec![
                ("zk_version", VERSION.into()),
                ("zk_server_state", mode.into()),
                ("zk_avg_latency", format!("{:.4}", stats.latency_avg_ms())),
                ("zk_max_latency", stats.latency_max_ms.to_string()),
                ("zk_min_latency", stats.latency_min_ms.to_string()),
                ("zk_packets_received", stats.packets_received.to_string()),
                ("zk_packets_sent", stats.packets_sent.to_string()),
                ("zk_num_alive_connections", p.connection_count().to_string()),
                ("zk_outstanding_requests", p.outstanding().to_string()),
                // Ours: answers handed out and not yet written, on the connection that has
                // the most (bounded by connectionQueueBytesMax plus one answer).
                (
                    "zk_largest_connection_queue_bytes",
                    p.largest_connection_queue_bytes().to_string(),
                ),
                ("zk_znode_count", tree.node_count().to_string()),
                ("zk_watch_count", p.watch_count().to_string()),
                ("zk_ephemerals_count", tree.ephemeral_count().to_string()),
                (
                    "zk_approximate_data_size",
                    tree.approximate_data_size().to_string(),
                ),
                ("zk_global_sessions", p.session_count().to_string()),
                ("zk_open_file_descriptor_count", open_fds.to_string()),
                ("zk_max_file_descriptor_count", max_fds.to_string()),
                ("zk_last_zxid", format!("{:#x}", tree.last_zxid())),
                ("zk_tree_digest", format!("{:#x}", tree.digest())),
            ];
            lines
                .into_iter()
                .map(|(k, v)| format!("{k}\t{v}\n"))
                .collect()
        }
        other => format!("{other} is not implemented by this server.\n"),
    }
}

/// Open file descriptors of this process and its limit (`mntr`, `/metrics`).
pub fn fd_counts() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    };
    (open, max)
}
