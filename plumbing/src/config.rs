//! Flags, environment variables and config files, one way for every binary.
//!
//! Each flag `--some-flag` can also come from `SPILLWAY_SOME_FLAG`, or from a
//! key `some-flag` (or `some_flag`) in the TOML file given by `--config`.
//! The command line wins over the environment, which wins over the file.
//! Bad input exits with status 2 and one line naming the bad value.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, Parser};

/// Parses this process's arguments into `T`, see the module docs.
pub fn parse<T: Parser>() -> T {
    parse_from(std::env::args_os())
}

/// Parses `args` (including the program name) into `T`, see the module docs.
pub fn parse_from<T: Parser, I: IntoIterator<Item = OsString>>(args: I) -> T {
    match try_parse_from::<T, _>(args) {
        Ok(t) => t,
        Err(Error::Clap(e)) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            // One line, as the contract asks, not clap's three.
            _ => {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                exit_bad_input(first.strip_prefix("error: ").unwrap_or(first))
            }
        },
        Err(Error::Config(msg)) => exit_bad_input(&msg),
    }
}

#[derive(Debug)]
pub enum Error {
    Clap(clap::Error),
    Config(String),
}

pub fn try_parse_from<T: Parser, I: IntoIterator<Item = OsString>>(args: I) -> Result<T, Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    let cmd = with_env_names(T::command());
    // A first, lenient pass only to find --config: flags that are required
    // may come from the file.
    let lenient = cmd.clone().ignore_errors(true).try_get_matches_from(&args);
    let Some(path) = lenient.as_ref().ok().and_then(find_config) else {
        let matches = cmd.try_get_matches_from(&args).map_err(Error::Clap)?;
        return T::from_arg_matches(&matches).map_err(Error::Clap);
    };
    let matches = lenient.map_err(Error::Clap)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("cannot read --config {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| Error::Config(format!("invalid TOML in --config {}: {e}", path.display())))?;

    // The file's keys apply to the innermost subcommand given.
    let (mut target, mut target_matches) = (&cmd, &matches);
    while let Some((name, sub)) = target_matches.subcommand() {
        target = target.find_subcommand(name).expect("clap matched it");
        target_matches = sub;
    }
    let mut extra = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = target
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown key `{key}` in --config {}",
                    path.display()
                ))
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            target_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if flag => {
                    if *b {
                        extra.push(OsString::from(format!("--{long}")));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(Error::Config(format!(
                        "key `{key}` in --config {} has an unsupported value {other}",
                        path.display()
                    )));
                }
            };
            extra.push(OsString::from(format!("--{long}={text}")));
        }
    }
    let mut all = args;
    all.extend(extra);
    let matches = cmd.try_get_matches_from(all).map_err(Error::Clap)?;
    T::from_arg_matches(&matches).map_err(Error::Clap)
}

fn find_config(matches: &ArgMatches) -> Option<PathBuf> {
    let mut m = matches;
    loop {
        if let Ok(Some(p)) = m.try_get_one::<PathBuf>("config") {
            return Some(p.clone());
        }
        m = m.subcommand()?.1;
    }
}

/// Gives every long flag its `SPILLWAY_<FLAG>` environment variable.
fn with_env_names(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let Some(long) = arg.get_long() else {
            return arg;
        };
        if matches!(long, "help" | "version") || arg.get_env().is_some() {
            return arg;
        }
        let name = format!("SPILLWAY_{}", long.to_uppercase().replace('-', "_"));
        arg.env(name)
    })
    .mut_subcommands(with_env_names)
}

/// Prints `<program>: error: <msg>` on stderr and exits with status 2, the
/// contract's answer to invalid flags, files and URIs.
pub fn exit_bad_input(msg: &str) -> ! {
    let prog = std::env::args()
        .next()
        .and_then(|p| p.rsplit('/').next().map(str::to_owned))
        .unwrap_or_else(|| "spillway".into());
    eprintln!("{prog}: error: {msg}");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Parser, Debug)]
    struct Flags {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:1")]
        addr: String,
        #[arg(long)]
        router: Vec<String>,
        #[arg(long)]
        insecure_plaintext: bool,
        #[arg(long, default_value_t = 5)]
        batch_size: usize,
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        std::iter::once("prog")
            .chain(v.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn config_file_fills_what_flags_do_not_give() {
        let dir = std::env::temp_dir().join(format!("spillway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "addr = \"0.0.0.0:9\"\nrouter = [\"a:1\", \"b:2\"]\ninsecure-plaintext = true\nbatch_size = 7\n",
        )
        .unwrap();
        let p: Flags = try_parse_from(args(&[
            "--config",
            f.to_str().unwrap(),
            "--batch-size",
            "3",
        ]))
        .unwrap();
        assert_eq!(p.addr, "0.0.0.0:9");
        assert_eq!(p.router, vec!["a:1", "b:2"]);
        assert!(p.insecure_plaintext);
        assert_eq!(p.batch_size, 3, "the command line wins over the file");

        std::fs::write(&f, "adress = \"x\"\n").unwrap();
        match try_parse_from::<Flags, _>(args(&["--config", f.to_str().unwrap()])) {
            Err(Error::Config(msg)) => assert!(msg.contains("unknown key `adress`"), "{msg}"),
            other => panic!("expected a config error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[derive(Parser, Debug)]
    struct NeedsRouter {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, required = true)]
        router: Vec<String>,
    }

    #[test]
    fn a_required_flag_may_come_from_the_file() {
        let dir = std::env::temp_dir().join(format!("spillway-config-req-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "router = [\"r:1\"]\n").unwrap();
        let p: NeedsRouter = try_parse_from(args(&["--config", f.to_str().unwrap()])).unwrap();
        assert_eq!(p.router, vec!["r:1"]);
        assert!(matches!(
            try_parse_from::<NeedsRouter, _>(args(&[])),
            Err(Error::Clap(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_long_flag_has_a_spillway_variable() {
        let cmd = with_env_names(Flags::command());
        let env = |long: &str| {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(
            env("insecure-plaintext").as_deref(),
            Some("SPILLWAY_INSECURE_PLAINTEXT")
        );
        assert_eq!(env("batch-size").as_deref(), Some("SPILLWAY_BATCH_SIZE"));
    }
}
