//! The `main-service user add` command: creates a login account in the
//! database of `DATABASE_URL` (same configuration layering as the service),
//! applying pending migrations first. The password is read from standard
//! input, never from the command line.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use sea_orm::{ConnectOptions, Database};

use crate::config;
use crate::login::{AddUserError, add_user};

const USAGE: &str =
    "usage: main-service user add --tenant TENANT --username USERNAME --password-stdin";

/// Runs the command in `args` (without the program name); `None` when
/// `args` is not a command (then the service runs).
pub async fn run(args: &[String]) -> Option<ExitCode> {
    let (first, rest) = args.split_first()?;
    if first != "user" {
        eprintln!("main-service: unknown command {first:?}\n{USAGE}");
        return Some(ExitCode::from(2));
    }
    Some(match user(rest).await {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("main-service: {message}");
            ExitCode::from(code)
        }
    })
}

async fn user(args: &[String]) -> Result<String, (u8, String)> {
    let usage = || (2, USAGE.to_owned());
    let (Some("add"), rest) = (
        args.first().map(String::as_str),
        args.get(1..).unwrap_or(&[]),
    ) else {
        return Err(usage());
    };
    let (mut tenant, mut username, mut stdin) = (None, None, false);
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--tenant" => tenant = it.next().cloned(),
            "--username" => username = it.next().cloned(),
            "--password-stdin" => stdin = true,
            _ => return Err(usage()),
        }
    }
    let (Some(tenant), Some(username), true) = (tenant, username, stdin) else {
        return Err(usage());
    };
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| {
            (
                1,
                format!("cannot read the password from standard input: {e}"),
            )
        })?;
    // One line: the password is what comes before its line break; a second
    // line is a mistake (a pasted file, two passwords), never part of it.
    let password = password
        .strip_suffix('\n')
        .map_or(password.as_str(), |p| p.strip_suffix('\r').unwrap_or(p));
    if password.contains(['\r', '\n']) {
        return Err((
            2,
            "the password is one line on standard input: more than one was given".into(),
        ));
    }

    let url = config::database_url(
        Some(Path::new(config::DEFAULT_FILE)),
        std::env::vars().collect(),
    )
    .map_err(|e| (2, format!("bad configuration: {e}")))?;
    migration::up_locked(&url, Duration::from_secs(5))
        .await
        .map_err(|e| (1, format!("migrations failed: {e}")))?;
    let mut options = ConnectOptions::new(url);
    options
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| (1, format!("cannot connect to DATABASE_URL: {e}")))?;
    let added = add_user(&db, &tenant, &username, password).await;
    let _ = db.close().await;
    match added {
        Ok(()) => Ok(format!("user {username:?} added to tenant {tenant:?}")),
        Err(e @ AddUserError::Exists { .. }) => Err((1, e.to_string())),
        Err(e @ AddUserError::Invalid(_)) => Err((2, e.to_string())),
        Err(e) => Err((1, e.to_string())),
    }
}
