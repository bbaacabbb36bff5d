//! Programs on the simulated internet of `support/netsim.rs`: everything a
//! test started is gone after it (namespaces, processes, threads, and
//! nothing on the host); mounts made by a program in a host are seen by the
//! test, those made under `ip netns exec` are not; a btfs-mount started in a
//! home reads from a public seeder.

#[path = "support/netsim.rs"]
mod netsim;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use netsim::*;
use support::*;

/// Prints a timing line past libtest's capture.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "netsim: {msg}");
}

/// The host's `/run/netns` (None if absent). Inside the namespaced run it
/// is read through the root of the supervising test process, our parent,
/// which lives in the host's mount namespace (`/proc/1/root` is not readable
/// in this container).
fn host_run_netns() -> Option<BTreeSet<String>> {
    let dir = if std::env::var_os("BTFS_NETNS").is_some() {
        format!(
            "/proc/{}/root/run/netns",
            std::os::unix::process::parent_id()
        )
    } else {
        "/run/netns".to_string()
    };
    let dir = fs::read_dir(dir).ok()?;
    Some(
        dir.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    )
}

/// Threads of this process named `netsim-*` (wires, STUN).
fn netsim_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("netsim-"))
        })
        .count()
}

/// Names this test gives its hosts, homes and segments: distinctive, so the
/// check on the host's `/run/netns` (shared with other helpers' work) only
/// looks for ours.
const NLB: [&str; 5] = ["nlb-a", "nlb-h", "nlb-x", "nlb-s", "nlb-m"];

#[test]
fn nothing_left_behind() {
    // Outside (the supervising process, on the host): none of our
    // namespaces may appear in the host's /run/netns, during or after.
    let host_before = host_run_netns().unwrap_or_default();
    if !in_netns("nothing_left_behind") {
        let after = host_run_netns().unwrap_or_default();
        let ours: Vec<&String> = after
            .difference(&host_before)
            .filter(|n| NLB.iter().any(|p| n.starts_with(p)))
            .collect();
        assert!(ours.is_empty(), "left in the host's /run/netns: {ours:?}");
        return;
    }
    let (inodes, mut sleeper) = {
        let net = Internet::new();
        let a = net.public_host(NLB[0]);
        let home = net.home(
            NLB[1],
            HomeOpts {
                upnp: true,
                natpmp: true,
                ..HomeOpts::default()
            },
        );
        let x = home.host(NLB[2]);
        let s1 = net.segment(NLB[3]);
        let _m = net.host(NLB[4], &[&s1, home.lan()]);
        a.iface(0).link.set_delay(Duration::from_millis(1));
        x.iface(0).link.set_loss(0.01);
        // A process the test leaves running: the Internet must end it.
        let sleeper = x.command("sleep").arg("600").spawn().unwrap();
        let mut names: Vec<String> = fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = net.netns_names();
        want.sort();
        assert_eq!(names, want, "our /run/netns");
        let inodes = net.netns_inodes();
        // The host's /run/netns holds none of them (by namespace inode), and
        // none of their names.
        let parent_root = format!("/proc/{}/root", std::os::unix::process::parent_id());
        assert!(
            fs::metadata(format!("{parent_root}/run")).is_ok(),
            "cannot see the host's /run"
        );
        for name in host_run_netns().unwrap_or_default() {
            assert!(
                !NLB.contains(&name.as_str()),
                "{name} is visible on the host"
            );
            let ino = fs::metadata(format!("{parent_root}/run/netns/{name}")).map(|m| m.ino());
            assert!(
                !ino.is_ok_and(|i| inodes.contains(&i)),
                "{name} is visible on the host"
            );
        }
        let pids = pids_in_netns(&inodes);
        assert!(pids.contains(&sleeper.id()), "sleep runs in x");
        assert!(pids.len() >= 2, "miniupnpd and sleep run: {pids:?}");
        assert!(netsim_threads() >= 5, "4 wire threads and the STUN server");
        (inodes, sleeper)
    };
    assert_eq!(
        fs::read_dir("/run/netns").unwrap().count(),
        0,
        "namespaces left in /run/netns"
    );
    assert_eq!(
        pids_in_netns(&inodes),
        Vec::<u32>::new(),
        "processes left in our namespaces"
    );
    assert!(
        sleeper.try_wait().unwrap().is_some(),
        "the sleep process still runs"
    );
    assert_eq!(netsim_threads(), 0, "netsim threads left");
}

#[test]
fn mounts_made_in_a_host_are_seen_by_the_test() {
    if !in_netns("mounts_made_in_a_host_are_seen_by_the_test") {
        return;
    }
    let net = Internet::new();
    let x = net.public_host("x");
    let tmp = tempfile::tempdir().unwrap();
    let (shared, private) = (tmp.path().join("shared"), tmp.path().join("private"));
    fs::create_dir(&shared).unwrap();
    fs::create_dir(&private).unwrap();
    // Host::command keeps the test's mount namespace (as for a FUSE mount by
    // btfs-mount): the test sees the mount.
    x.run(
        "mount",
        &["-t", "tmpfs", "netsim-shared", &shared.to_string_lossy()],
    );
    assert!(is_mounted(&shared), "a mount made through Host::command");
    // `ip netns exec` gives the command a mount namespace of its own.
    let out = Command::new("ip")
        .args(["netns", "exec", x.netns(), "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs netsim-private {0} && grep -c netsim-private /proc/self/mountinfo && ip -4 -o addr show eth0",
            private.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("1\n"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("198.51.100.10/24"),
        "ip netns exec runs in x: {text}"
    );
    assert!(!is_mounted(&private), "an ip netns exec mount leaked out");
    assert!(unmount(&shared));
}

#[test]
fn btfs_mount_in_a_home_reads_from_a_public_seeder() {
    if !in_netns("btfs_mount_in_a_home_reads_from_a_public_seeder") {
        return;
    }
    let t0 = Instant::now();
    let net = Internet::new();
    let a = net.public_host("a");
    let home = net.home("h1", HomeOpts::default());
    let x = home.host("x");
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_tree(&site, &sample_spec());
    let a_ip = a.ip().to_string();
    let mut seeder = a.lt_node(&["--listen-ip", &a_ip, "--seed", &site.to_string_lossy()]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    let peer = format!("{}:{}", a.ip(), seeder.port());
    let cache = tmp.path().join("cache");
    // Started inside x (it dials out through the NAT), mounted in the test's
    // mount namespace: the test reads the files itself.
    let args = MountArgs::new(&magnet)
        .no_dht()
        .peer(&peer)
        .cache_dir(&cache);
    let mount = x.enter(|| Mount::background(&tmp.path().join("mnt"), &args.build()));
    let x_ns = fs::metadata(x.netns_path()).unwrap().ino();
    let in_x = pids_in_netns(&[x_ns]);
    assert!(
        mount.pids().iter().all(|p| in_x.contains(p)) && !mount.pids().is_empty(),
        "btfs-mount {:?} runs in x ({in_x:?})",
        mount.pids()
    );
    for f in ["index.html", "media/big.bin", "café/naïve résumé.txt"] {
        assert_eq!(
            sha256_file(&mount.path().join("site").join(f)),
            sha256_file(&site.join(f)),
            "{f}"
        );
    }
    note(&format!(
        "btfs-mount in a home read from a public seeder: {:?}",
        t0.elapsed()
    ));
    mount.unmount_and_wait(Duration::from_secs(10));
}
