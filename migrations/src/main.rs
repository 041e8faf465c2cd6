//! `migration up | down | status | fresh` against `DATABASE_URL`; `up`
//! (also with no arguments) holds the migrators' advisory lock
//! ([`migration::up_locked`]) like every other migrator of the schema.

use sea_orm_migration::prelude::*;

const HELP: &str = "\
usage: migration [up | down | status | fresh | --help | --version]

Applies the DWP database schema to DATABASE_URL. `up` (the default) waits
for the migrators' advisory lock, so any number may run at once; `down`,
`status` and `fresh` are sea-orm-migration's commands (`fresh` drops
every table).";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wants = |flags: [&str; 2]| args.iter().any(|a| flags.contains(&a.as_str()));
    let version = concat!("migration ", env!("CARGO_PKG_VERSION"));
    if wants(["--help", "-h"]) {
        println!("{version}\n\n{HELP}");
        return;
    }
    if wants(["--version", "-V"]) {
        println!("{version}");
        return;
    }
    if args.is_empty() || args == ["up"] {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("DATABASE_URL is required");
            std::process::exit(2);
        };
        if let Err(e) = migration::up_locked(&url, std::time::Duration::from_secs(10)).await {
            eprintln!("migrations failed: {e}");
            std::process::exit(1);
        }
        println!("migrations applied");
        return;
    }
    cli::run_cli(migration::Migrator).await;
}
