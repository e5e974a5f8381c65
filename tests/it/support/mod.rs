//! Helpers shared by the integration tests. The fake Telegram and the
//! third-party peers are crates of their own (`crates/`), built once.

pub mod bot;
pub mod replicas;
pub mod scripted_mcp;

/// A `wait_for_message` predicate: the message text contains `needle`.
pub fn text_contains(needle: &'static str) -> impl Fn(&fake_telegram::SentMessage) -> bool {
    move |message| message.text.contains(needle)
}

/// A loopback port where nothing listens, reserved for as long as this
/// lives: the socket is bound but never listens, so connections are
/// refused and no other test can take the port meanwhile.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    ClosedPort {
        _socket: socket,
        port,
    }
}

/// A loopback port free a moment ago, for a process that must be told its
/// port before it starts (it may be taken meanwhile; rare enough here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
