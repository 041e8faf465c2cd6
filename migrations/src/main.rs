//! `migration up | down | status | fresh` against `DATABASE_URL`; `up`
//! (also with no arguments) holds the migrators' advisory lock
//! ([`migration::up_locked`]) like every other migrator of the schema.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
