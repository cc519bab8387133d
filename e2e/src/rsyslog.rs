//! A real syslog receiver for the routes tests: rsyslog from Debian, run
//! in the foreground with a configuration of our own.
//!
//! It listens on loopback with one input per way in ([`INPUTS`]) and writes
//! what each receives, parsed by rsyslog, as one JSON object per line
//! (`pri`, `hostname`, `app`, `procid`, `msgid`, `sd`, `msg`, `time`) to a
//! file of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::{Certs, free_port, wait_port};

/// The inputs: name and kind (`udp`, `tcp`, or `tls`, which asks for a
/// client certificate signed by the test CA).
pub const INPUTS: &[(&str, &str)] = &[
    ("udp", "udp"),
    ("udp3164", "udp"),
    ("tcp", "tcp"),
    ("tcplf", "tcp"),
    ("tls", "tls"),
    ("multiline", "tcp"),
];

pub struct Rsyslog {
    dir: PathBuf,
    ports: BTreeMap<&'static str, u16>,
    child: Option<Child>,
}

/// Why rsyslog tests cannot run here, if they cannot (panics under
/// the strict flag, where `cargo xtask test` installs rsyslog).
pub fn unavailable() -> Option<String> {
    crate::tool_missing(
        "rsyslogd",
        "-v",
        "rsyslog tests",
        "cargo xtask test installs rsyslog and rsyslog-gnutls",
    )
}

impl Rsyslog {
    /// Writes the configuration and starts rsyslogd.
    pub fn start(certs: &Certs) -> Rsyslog {
        let dir = certs.dir.join(format!("rsyslog-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: BTreeMap<_, _> = INPUTS
            .iter()
            .map(|(name, _)| (*name, free_port()))
            .collect();
        let d = dir.display();
        let mut conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp" maxSessions="200")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="time" name="timereported" dateFormat="rfc3339" format="jsonf")
}}
"#,
            ca = certs.path("ca.pem"),
            cert = certs.path("receiver.pem"),
            key = certs.path("receiver-key.pem"),
        );
        for (name, kind) in INPUTS {
            let port = ports[name];
            conf += &format!(
                "ruleset(name=\"{name}\") {{ action(type=\"omfile\" file=\"{d}/{name}.jsonl\" template=\"fields\") }}\n"
            );
            conf += &match *kind {
                "udp" => format!(
                    "input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"{name}\")\n"
                ),
                "tcp" => format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"{name}\")\n"
                ),
                _ => format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"{name}\" \
                     streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"x509/certvalid\")\n"
                ),
            };
        }
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            dir,
            ports,
            child: None,
        };
        r.restart();
        r
    }

    /// Starts rsyslogd (again) on the same ports and files.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.join("rsyslogd.log")).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rsyslogd starts");
        self.child = Some(child);
        for (name, kind) in INPUTS {
            if *kind != "udp" {
                wait_port(self.ports[name]);
            }
        }
        // The UDP inputs open with the TCP ones; give them a moment.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Kills rsyslogd: its ports close.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn port(&self, input: &str) -> u16 {
        self.ports[input]
    }

    /// What `input` received so far, as rsyslog parsed it.
    pub fn received(&self, input: &str) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{input}.jsonl"))).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// rsyslogd's own messages (for failure reports).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
