//! A TCP link to a real server that a test can cut and restore: while cut,
//! every open connection is closed and new ones are closed at once, which is
//! what the service sees when PostgreSQL stops and starts again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct Link {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (up2, gen2) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = gen2.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
            task,
        }
    }

    /// Closes every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` (a postgres:// URL to 127.0.0.1:5432) rewritten to go through the link.
    pub(crate) fn url(&self, url: &str) -> String {
        let (scheme_auth, rest) = url.split_once('@').expect("URL with user@host");
        let (_, path) = rest.split_once('/').expect("URL with a database");
        format!("{scheme_auth}@{}/{path}", self.addr)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Where the test PostgreSQL listens.
pub(crate) fn postgres_addr() -> SocketAddr {
    let url = super::helpers::admin_database_url();
    let host_port = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("host:port in TEST_DATABASE_URL")
        .replace("localhost", "127.0.0.1");
    let host_port = if host_port.contains(':') {
        host_port
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .parse()
        .expect("TEST_DATABASE_URL host is an IP address or localhost")
}
