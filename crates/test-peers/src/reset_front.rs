//! A front that resets the first connections it accepts, as a server whose
//! accept queue overflowed under a burst does: the client's request is
//! read, then the connection is closed with an RST. Later connections are
//! passed through to the backend untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

pub struct ResetFront {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ResetFront {
    /// Resets the first `resets` connections, forwards the rest to
    /// `backend`.
    pub async fn start(backend: SocketAddr, resets: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if n < resets {
                        let mut buf = [0u8; 1024];
                        let _ = client.read(&mut buf).await;
                        let _ = client.set_zero_linger();
                        return;
                    }
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ResetFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
