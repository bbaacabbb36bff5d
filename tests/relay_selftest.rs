//! Self-test of the bad-network relay (`tests/relay/mod.rs`) that the uTP
//! tests and benchmarks put between peers: TCP streams arrive intact and
//! late, stalls hold data back without losing it, and UDP datagrams are
//! delayed and dropped at about the configured rate.
//!
//! Run: `cargo test --test relay_selftest -- --nocapture`

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

mod relay;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use relay::{Profile, Relay};
use support::in_netns;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// 4 MiB echoed through a TCP relay with 20 ms (+ up to 5 ms) each way and
/// a 100 ms stall every 300 ms: same bytes back, and a 1-byte ping takes at
/// least the two delays.
#[test]
fn tcp_relay_delays_and_stalls_without_loss() {
    if !in_netns("tcp_relay_delays_and_stalls_without_loss") {
        return;
    }
    let server = TcpListener::bind(any()).unwrap();
    let target = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in server.incoming() {
            let mut s = s.unwrap();
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut w);
            });
        }
    });
    let profile = Profile {
        delay_ms: 20,
        jitter_ms: 5,
        stall_every_ms: 300,
        stall_len_ms: 100,
        ..Profile::default()
    };
    let r = Relay::tcp(any(), target, profile);
    let mut c = TcpStream::connect(r.addr()).unwrap();
    c.set_nodelay(true).unwrap();
    let t0 = Instant::now();
    c.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    let rtt = t0.elapsed();
    assert!(rtt >= Duration::from_millis(40), "ping took {rtt:?}");

    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d).unwrap());
    let mut back = vec![0u8; data.len()];
    let t0 = Instant::now();
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "bytes changed in the relay");
    eprintln!(
        "relay TCP: ping {rtt:?}, 4 MiB echoed in {:?}, {:?}",
        t0.elapsed(),
        r.stats()
    );
}

/// 2 000 datagrams through a UDP relay with 10 % loss and 15 ms delay:
/// between 5 % and 15 % are lost, each arrives at least 15 ms after it was
/// sent, and answers find their way back to the sender.
#[test]
fn udp_relay_delays_and_drops() {
    if !in_netns("udp_relay_delays_and_drops") {
        return;
    }
    let server = UdpSocket::bind(any()).unwrap();
    let target = server.local_addr().unwrap();
    let profile = Profile {
        delay_ms: 15,
        loss: 0.10,
        ..Profile::default()
    };
    let r = Relay::udp(any(), target, profile);
    let client = UdpSocket::bind(any()).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let t0 = Instant::now();
    client.send_to(b"first", r.addr()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = loop {
        // the first datagram may be lost: resend until one arrives
        match server.recv_from(&mut buf) {
            Ok(x) => break x,
            Err(_) => client.send_to(b"first", r.addr()).map(|_| ()).unwrap(),
        }
    };
    assert_eq!(&buf[..n], b"first");
    assert!(t0.elapsed() >= Duration::from_millis(15));
    server.send_to(b"answer", from).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // the answer itself may be lost (10 %): retry a few times
    let mut answered = false;
    for _ in 0..20 {
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            answered = &buf[..n] == b"answer";
            break;
        }
        server.send_to(b"answer", from).unwrap();
    }
    assert!(answered, "the answer came back through the relay");

    const N: u32 = 2000;
    // count on another thread while sending, so the server's receive
    // buffer never overflows (that loss would not be the relay's)
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut got = 0u32;
        while let Ok((n, _)) = server.recv_from(&mut buf) {
            if n == 4 {
                got += 1;
            }
        }
        got
    });
    for i in 0..N {
        client.send_to(&i.to_be_bytes(), r.addr()).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = counter.join().unwrap();
    let lost = f64::from(N - got) / f64::from(N);
    eprintln!(
        "relay UDP: {got}/{N} arrived ({:.1} % lost), {:?}",
        lost * 100.0,
        r.stats()
    );
    assert!((0.05..=0.15).contains(&lost), "loss {lost}");
}
