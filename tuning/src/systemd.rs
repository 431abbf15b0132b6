//! systemd service units for the broker and the coordinator, derived from a profile so that
//! the unit and the process agree: the broker's `CPUAffinity` is exactly its shard cores (a
//! shard cannot pin itself to a core outside the process's CPU mask), the coordinator's is the
//! cores no shard runs on, and the limits are what io_uring and many partitions need
//! (`LimitMEMLOCK=infinity` for ring and registered-buffer memory, `LimitNOFILE` for segment
//! files and connections). `broker tuning service-unit` prints them; docs/operations.md shows
//! how to install them.

use std::fmt::Write;

use crate::Profile;

/// Open files a service may hold: the kernel's default `fs.nr_open`. The broker's own open-file
/// budget (`storage::disk_budget`) is measured against this limit at start.
pub const LIMIT_NOFILE: u64 = 1_048_576;

/// One `.service` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    pub description: String,
    /// The absolute executable, then its arguments.
    pub exec_start: Vec<String>,
    /// The account the service runs as; root when absent.
    pub user: Option<String>,
    /// `CPUAffinity`; every CPU when empty.
    pub cpus: Vec<usize>,
}

impl ServiceUnit {
    /// The unit file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "[Unit]");
        let _ = writeln!(text, "Description={}", self.description);
        let _ = writeln!(text, "Wants=network-online.target");
        let _ = writeln!(text, "After=network-online.target");
        let _ = writeln!(text);
        let _ = writeln!(text, "[Service]");
        let _ = writeln!(text, "Type=simple");
        let exec: Vec<String> = self.exec_start.iter().map(|arg| quote(arg)).collect();
        let _ = writeln!(text, "ExecStart={}", exec.join(" "));
        if let Some(user) = &self.user {
            let _ = writeln!(text, "User={user}");
            let _ = writeln!(text, "Group={user}");
        }
        // SIGTERM is a clean shutdown for both servers (flush, close segments, leave the
        // ensemble); give it time before SIGKILL.
        let _ = writeln!(text, "KillSignal=SIGTERM");
        let _ = writeln!(text, "TimeoutStopSec=60");
        let _ = writeln!(text, "Restart=on-failure");
        let _ = writeln!(text, "RestartSec=2");
        let _ = writeln!(text, "LimitNOFILE={LIMIT_NOFILE}");
        let _ = writeln!(text, "LimitMEMLOCK=infinity");
        if !self.cpus.is_empty() {
            let cpus: Vec<String> = self.cpus.iter().map(usize::to_string).collect();
            let _ = writeln!(text, "CPUAffinity={}", cpus.join(" "));
        }
        let _ = writeln!(text, "NoNewPrivileges=yes");
        let _ = writeln!(text);
        let _ = writeln!(text, "[Install]");
        let _ = writeln!(text, "WantedBy=multi-user.target");
        text
    }
}

/// The broker's CPUs: its shard cores.
pub fn broker_cpus(profile: &Profile) -> Vec<usize> {
    profile.shard_cores().iter().map(|core| core.cpu).collect()
}

/// The coordinator's CPUs: the `online` CPUs no shard runs on, or every CPU (empty) when the
/// shards take them all.
pub fn coordinator_cpus(profile: &Profile, online: usize) -> Vec<usize> {
    let shards = broker_cpus(profile);
    let rest: Vec<usize> = (0..online).filter(|cpu| !shards.contains(cpu)).collect();
    if rest.is_empty() {
        Vec::new()
    } else {
        rest
    }
}

/// One ExecStart word as systemd splits them: quoted when it holds white space or quotes,
/// `%` (specifiers) and `$` (environment) doubled so they stay literal.
fn quote(arg: &str) -> String {
    let literal = arg.replace('%', "%%").replace('$', "$$");
    let needs_quotes = literal.is_empty()
        || literal
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == ';');
    if !needs_quotes {
        return literal;
    }
    let escaped = literal.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn profile(text: &str) -> Profile {
        Profile::parse(text, Path::new("p.toml"), 4).unwrap()
    }

    #[test]
    fn the_broker_runs_on_its_shard_cores_and_the_coordinator_on_the_rest() {
        let two_shards =
            profile("[[core]]\ncpu = 1\nrole = \"shard\"\n[[core]]\ncpu = 2\nrole = \"shard\"\n");
        assert_eq!(broker_cpus(&two_shards), vec![1, 2]);
        assert_eq!(coordinator_cpus(&two_shards, 4), vec![0, 3]);
        let all =
            profile("[[core]]\ncpu = 0\nrole = \"shard\"\n[[core]]\ncpu = 1\nrole = \"shard\"\n");
        assert_eq!(coordinator_cpus(&all, 2), Vec::<usize>::new());
    }

    #[test]
    fn exec_start_words_survive_systemd_splitting() {
        assert_eq!(quote("/usr/bin/broker"), "/usr/bin/broker");
        assert_eq!(quote("/data dir/x"), "\"/data dir/x\"");
        assert_eq!(quote("50%"), "50%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn a_unit_states_its_limits_and_affinity() {
        let unit = ServiceUnit {
            description: "d".into(),
            exec_start: vec!["/bin/broker".into(), "serve".into()],
            user: Some("streambox".into()),
            cpus: vec![0, 2],
        }
        .render();
        for line in [
            "ExecStart=/bin/broker serve",
            "User=streambox",
            "CPUAffinity=0 2",
            "LimitMEMLOCK=infinity",
            "LimitNOFILE=1048576",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing in\n{unit}");
        }
        let everywhere = ServiceUnit {
            description: "d".into(),
            exec_start: vec!["/bin/c".into()],
            user: None,
            cpus: Vec::new(),
        }
        .render();
        assert!(!everywhere.contains("CPUAffinity"));
        assert!(!everywhere.contains("User="));
    }
}
