//! Access control and hostile peers of shared mode (issue 11, parts 1-2).
//!
//! * A second uid (`nobody`, through `setpriv`) can neither read a store's
//!   files nor use its socket, under umask 022 and 000 — and the server
//!   refuses it even when the socket is reachable by mistake.
//! * A directory pre-created by another user, or writable by others and not
//!   empty, is refused with a message that says how to fix it; a client
//!   refuses a server of another uid.
//! * Oversize length prefixes, stalled half-frames, too many connections,
//!   transactions or buffered bytes are errors for that client only; the
//!   server keeps serving the others, and an idle connection closed by the
//!   server is replaced without an error.
//!
//! The tests that need a second uid run only as root with `setpriv` and
//! user `nobody` (uid 65534); elsewhere they print why and pass.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::remote::{open_shared, RemoteKv, RemoteServer, ServerLimits, SOCKET_FILE};
use pagestore::kv::{Kv, KvError};

const NOBODY: u32 = 65534;

/// Why a second uid cannot be used here, if it cannot.
fn second_uid_unavailable() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root: cannot switch to a second uid".into());
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Some("setpriv is not installed".into());
    }
    let nobody = Command::new("id").args(["-u", "nobody"]).output();
    match nobody {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == NOBODY.to_string() => None,
        _ => Some(format!("no user nobody with uid {NOBODY}")),
    }
}

/// A base directory that every user may traverse (the default temp
/// directory is 0700, which would hide the store from `nobody` whatever
/// the store's own permissions).
fn open_base() -> tempfile::TempDir {
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), PermissionsExt::from_mode(0o755)).unwrap();
    base
}

fn helper(name: &str, vars: &[(&str, String)], as_nobody: bool) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the owner helper (opens `store` shared under `umask`) and waits
/// until it serves.
fn start_owner(store: &Path, umask: &str) -> Child {
    let mut child = helper(
        "owner_helper",
        &[
            ("SECURITY_STORE", store.display().to_string()),
            ("SECURITY_UMASK", umask.to_string()),
        ],
        false,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines.next().expect("owner helper ended").unwrap();
        if line.contains("OWNER READY") {
            break;
        }
    }
    // Keep draining, so that the helper's last words find a reader.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Runs the intruder helper as `nobody` against `store`; its report lines.
fn intrude(store: &Path) -> Vec<String> {
    let out = helper(
        "intruder_helper",
        &[("SECURITY_STORE", store.display().to_string())],
        true,
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "intruder helper failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest may print its "test ... " prefix on the first line.
    text.lines()
        .filter_map(|l| l.find("PROBE ").map(|i| l[i..].to_string()))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

fn second_uid_is_kept_out(umask: &str) {
    if let Some(why) = second_uid_unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let base = open_base();
    let store = base.path().join("store");
    let mut owner = start_owner(&store, umask);
    assert_eq!(mode(&store), 0o700, "umask {umask}");
    for f in ["data.redb", "LOCK", SOCKET_FILE] {
        assert_eq!(mode(&store.join(f)), 0o600, "{f} under umask {umask}");
    }
    let probes = intrude(&store);
    println!("umask {umask}, store as created: {probes:#?}");
    assert!(probes.len() >= 5, "{probes:?}");
    for p in &probes {
        assert!(p.contains(" denied"), "{p}");
    }

    // Misconfigured by hand: directory traversable, socket open to all.
    // The files stay private, and the server itself refuses the peer.
    std::fs::set_permissions(&store, PermissionsExt::from_mode(0o711)).unwrap();
    std::fs::set_permissions(store.join(SOCKET_FILE), PermissionsExt::from_mode(0o777)).unwrap();
    let probes = intrude(&store);
    println!("umask {umask}, socket opened by hand: {probes:#?}");
    let raw = probes
        .iter()
        .find(|p| p.starts_with("PROBE raw-hello"))
        .unwrap();
    assert!(
        raw.contains(" denied") && raw.contains("permission denied") && raw.contains("uid 0"),
        "{raw}"
    );
    for p in &probes {
        assert!(p.contains(" denied"), "{p}");
    }
    drop(owner.stdin.take());
    owner.wait().unwrap();
}

#[test]
fn second_uid_cannot_read_or_connect_umask_022() {
    second_uid_is_kept_out("022");
}

#[test]
fn second_uid_cannot_read_or_connect_umask_000() {
    second_uid_is_kept_out("000");
}

/// Opens the store shared under `SECURITY_UMASK`, says so and serves until
/// stdin closes.
#[test]
#[ignore = "run by the second-uid tests as a child process"]
fn owner_helper() {
    let Ok(store) = std::env::var("SECURITY_STORE") else {
        return;
    };
    let umask = u32::from_str_radix(&std::env::var("SECURITY_UMASK").unwrap(), 8).unwrap();
    // SAFETY: umask cannot fail; this helper process is single-purpose.
    unsafe { libc::umask(umask as libc::mode_t) };
    let kv = open_shared(EmbeddedOptions::dir(&store)).unwrap();
    let mut t = kv.begin().unwrap();
    t.set(b"secret", b"the owner's row");
    t.commit().unwrap();
    println!("OWNER READY");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// Tries everything another user could, printing `PROBE <what> denied|OPEN`.
#[test]
#[ignore = "run by the second-uid tests as a child process, as another uid"]
fn intruder_helper() {
    let Ok(store) = std::env::var("SECURITY_STORE") else {
        return;
    };
    let store = PathBuf::from(store);
    let report = |what: &str, outcome: Result<String, String>| match outcome {
        Ok(how) => println!("PROBE {what} OPEN: {how}"),
        Err(why) => println!("PROBE {what} denied: {why}"),
    };
    for f in ["data.redb", "LOCK"] {
        let r = std::fs::read(store.join(f))
            .map(|b| format!("read {} bytes", b.len()))
            .map_err(|e| e.to_string());
        report(&format!("read-{f}"), r);
    }
    let r = std::fs::read_dir(&store)
        .map(|d| format!("{} entries", d.count()))
        .map_err(|e| e.to_string());
    report("list-dir", r);
    let r = RemoteKv::connect(store.join(SOCKET_FILE))
        .and_then(|kv| kv.begin()?.get(b"secret", true))
        .map(|v| format!("read the row: {v:?}"))
        .map_err(|e| e.to_string());
    report("client-connect", r);
    let r = open_shared(EmbeddedOptions::dir(&store))
        .and_then(|kv| kv.begin()?.get(b"secret", true))
        .map(|v| format!("read the row: {v:?}"))
        .map_err(|e| e.to_string());
    report("open-shared", r);
    // By hand, skipping the client's own check of the server: a Hello.
    let r = UnixStream::connect(store.join(SOCKET_FILE))
        .map_err(|e| e.to_string())
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&frame(&hello()));
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            let text = String::from_utf8_lossy(&answer).to_string();
            if answer.len() > 4 && answer[4] == 1 {
                Err(format!("server answered an error: {text}"))
            } else {
                Ok(format!("server answered: {text}"))
            }
        });
    report("raw-hello", r);
}

/// A Hello request, encoded by hand (postcard): no discards, txn 0, no
/// ops, `Call::Hello { version: 1 }`, `want_read_version: false`.
fn hello() -> Vec<u8> {
    vec![0, 0, 0, 0, 1, 0]
}

/// A `ReadVersion` request of transaction `txn` (< 128).
fn read_version_request(txn: u8) -> Vec<u8> {
    vec![0, txn, 0, 1, 0]
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Reads one frame; `None` at end of stream.
fn read_answer(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// Whether an answer is an error whose text contains `needle`.
fn is_error(answer: &[u8], needle: &str) -> bool {
    answer.first() == Some(&1) && String::from_utf8_lossy(answer).contains(needle)
}

#[test]
fn directory_of_another_user_is_refused() {
    if let Some(why) = second_uid_unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let base = open_base();
    // Pre-created by someone else (e.g. in a shared working directory).
    let store = base.path().join("planted");
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).unwrap();
    let err = open_shared(EmbeddedOptions::dir(&store)).err().unwrap();
    println!("{err}");
    assert!(err.message.contains("belongs to uid 65534"), "{err}");
    assert!(err.message.contains("chown"), "{err}");
    assert!(
        !store.join("data.redb").exists(),
        "nothing created in the planted directory"
    );
    let err = EmbeddedKv::open(EmbeddedOptions::dir(&store)).unwrap_err();
    assert!(err.message.contains("belongs to uid 65534"), "{err}");

    // Ours, but with an entry someone else put there.
    let ours = base.path().join("ours");
    drop(EmbeddedKv::open(EmbeddedOptions::dir(&ours)).unwrap());
    let planted = ours.join("kv.sock");
    std::fs::write(&planted, b"").unwrap();
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    let err = open_shared(EmbeddedOptions::dir(&ours)).err().unwrap();
    println!("{err}");
    assert!(
        err.message.contains("kv.sock belongs to uid 65534"),
        "{err}"
    );
}

#[test]
fn directory_writable_by_others_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("store");
    drop(EmbeddedKv::open(EmbeddedOptions::dir(&store)).unwrap());
    std::fs::set_permissions(&store, PermissionsExt::from_mode(0o777)).unwrap();
    let err = open_shared(EmbeddedOptions::dir(&store)).err().unwrap();
    println!("{err}");
    assert_eq!(err.code, KvError::IO_ERROR);
    assert!(err.message.contains("writable by other users"), "{err}");
    assert!(
        err.message
            .contains(&format!("chmod 700 {}", store.display())),
        "{err}"
    );
    // Following the advice fixes it.
    std::fs::set_permissions(&store, PermissionsExt::from_mode(0o700)).unwrap();
    open_shared(EmbeddedOptions::dir(&store)).unwrap();
}

#[test]
fn store_of_an_older_version_is_made_private() {
    let base = tempfile::tempdir().unwrap();
    let store = base.path().join("store");
    drop(EmbeddedKv::open(EmbeddedOptions::dir(&store)).unwrap());
    // What an older version left under umask 022.
    std::fs::set_permissions(&store, PermissionsExt::from_mode(0o755)).unwrap();
    for f in ["data.redb", "LOCK"] {
        std::fs::set_permissions(store.join(f), PermissionsExt::from_mode(0o644)).unwrap();
    }
    drop(EmbeddedKv::open(EmbeddedOptions::dir(&store)).unwrap());
    assert_eq!(mode(&store), 0o700);
    for f in ["data.redb", "LOCK"] {
        assert_eq!(mode(&store.join(f)), 0o600, "{f}");
    }
}

#[test]
fn client_refuses_a_server_of_another_uid() {
    if let Some(why) = second_uid_unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let base = open_base();
    let dir = base.path().join("nobodys");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = dir.join("fake.sock");
    let mut fake = helper(
        "fake_server_helper",
        &[("SECURITY_SOCKET", socket.display().to_string())],
        true,
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let out = fake.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    loop {
        let line = lines.next().expect("fake server ended").unwrap();
        if line.contains("FAKE READY") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let err = RemoteKv::connect(&socket).unwrap_err();
    println!("{err}");
    assert!(err.message.contains("runs as uid 65534"), "{err}");
    drop(fake.stdin.take());
    fake.wait().unwrap();
}

/// A fake store server run by another user: answers any request with a
/// greeting.
#[test]
#[ignore = "run by client_refuses_a_server_of_another_uid, as another uid"]
fn fake_server_helper() {
    let Ok(socket) = std::env::var("SECURITY_SOCKET") else {
        return;
    };
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, PermissionsExt::from_mode(0o777)).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                while read_answer(&mut s).is_some() {
                    // Ok(Reply::Hello { version: 1, backend: "fake" })
                    let _ = s.write_all(&frame(&[0, 0, 1, 4, b'f', b'a', b'k', b'e']));
                }
            });
        }
    });
    println!("FAKE READY");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// An in-memory store served on a socket in its own directory.
fn serve(limits: ServerLimits) -> (tempfile::TempDir, RemoteServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SOCKET_FILE);
    let kv: Arc<dyn Kv> = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
    let server = RemoteServer::start_with_limits(kv, &path, limits).unwrap();
    (dir, server, path)
}

/// A normal client still works: a write and a read of it.
fn still_serves(kv: &RemoteKv, key: &[u8]) {
    let mut t = kv.begin().unwrap();
    t.set(key, b"v");
    t.commit().unwrap();
    let mut t = kv.begin().unwrap();
    assert_eq!(t.get(key, false).unwrap().as_deref(), Some(&b"v"[..]));
}

/// Waits (bounded) for the end of the stream, after any answer frames.
fn wait_closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[test]
fn oversize_prefix_and_idle_half_frame_leave_the_server_responsive() {
    let limits = ServerLimits {
        frame_timeout: Duration::from_secs(3),
        ..ServerLimits::default()
    };
    let (_dir, server, path) = serve(limits);
    let kv = RemoteKv::connect(&path).unwrap();

    // A length prefix of almost 4 GiB: answered 2101 and closed, with
    // nothing allocated for it.
    let mut huge = UnixStream::connect(&path).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    huge.write_all(&0xFFFF_FFF0u32.to_le_bytes()).unwrap();
    let answer = read_answer(&mut huge).expect("an answer to the oversize prefix");
    assert!(
        is_error(&answer, "exceeds the store server's"),
        "{answer:?}"
    );
    assert!(wait_closed(&mut huge));

    // A prefix of 1 MB and 10 bytes, then silence.
    let mut stalled = UnixStream::connect(&path).unwrap();
    stalled.write_all(&1_000_000u32.to_le_bytes()).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    // Other clients are served meanwhile.
    still_serves(&kv, b"during-stall");
    // The stalled one is dropped after the frame timeout.
    assert!(wait_closed(&mut stalled), "stalled connection closed");
    still_serves(&kv, b"after-stall");
    assert!(server.connections() >= 1);
}

#[test]
fn idle_connection_closed_by_the_server_is_replaced_silently() {
    let limits = ServerLimits {
        idle_timeout: Duration::from_millis(200),
        ..ServerLimits::default()
    };
    let (_dir, server, path) = serve(limits);
    let kv = RemoteKv::connect(&path).unwrap();
    still_serves(&kv, b"a");
    // Every pooled connection is closed by the server meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.connections(), 0, "idle connections closed");
    still_serves(&kv, b"b");
    assert!(!kv.is_lost());
}

#[test]
fn connection_limit_is_an_error_for_the_newcomer_only() {
    let limits = ServerLimits {
        max_connections: 2,
        ..ServerLimits::default()
    };
    let (_dir, server, path) = serve(limits);
    let kv = RemoteKv::connect(&path).unwrap(); // one pooled connection
    let idle = UnixStream::connect(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.connections() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = RemoteKv::connect(&path).unwrap_err();
    println!("{err}");
    assert_eq!(err.code, KvError::PROCESS_BEHIND, "{err}");
    assert!(err.message.contains("its limit"), "{err}");
    // The client already connected keeps working.
    still_serves(&kv, b"k");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match RemoteKv::connect(&path) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.code, KvError::PROCESS_BEHIND, "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn transactions_per_connection_are_bounded() {
    let limits = ServerLimits {
        max_transactions_per_connection: 2,
        ..ServerLimits::default()
    };
    let (_dir, _server, path) = serve(limits);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    for txn in 1..=2 {
        s.write_all(&frame(&read_version_request(txn))).unwrap();
        let answer = read_answer(&mut s).unwrap();
        assert_eq!(answer[0], 0, "transaction {txn} served");
    }
    s.write_all(&frame(&read_version_request(3))).unwrap();
    let answer = read_answer(&mut s).unwrap();
    assert!(is_error(&answer, "transactions are open"), "{answer:?}");
    assert!(wait_closed(&mut s));
    still_serves(&RemoteKv::connect(&path).unwrap(), b"k");
}

#[test]
fn buffered_bytes_are_bounded_per_connection() {
    let limits = ServerLimits {
        max_buffered_bytes: 100_000,
        ..ServerLimits::default()
    };
    let (_dir, _server, path) = serve(limits);
    let kv = RemoteKv::connect(&path).unwrap();
    let mut t = kv.begin().unwrap();
    for i in 0..20u32 {
        t.set(&i.to_be_bytes(), &[7u8; 10_000]);
    }
    let err = t.get(b"x", false).unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_LARGE, "{err}");
    assert!(err.message.contains("100000-byte limit"), "{err}");
    // The transaction stays failed (it is not begun again without its
    // writes), and its commit says so.
    let err = t.get(b"x", false).unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_LARGE, "{err}");
    let err = t.commit().unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_LARGE, "{err}");
    assert!(!kv.is_lost());
    still_serves(&kv, b"k");
}

#[test]
fn ops_over_the_frame_limit_fail_the_transaction_not_the_connection() {
    let (_dir, _server, path) = serve(ServerLimits::default());
    let kv = RemoteKv::connect(&path).unwrap();
    let mut t = kv.begin().unwrap();
    // 25 MB of writes shipped with one read: over the 21 MiB frame cap.
    for i in 0..250u32 {
        t.set(&i.to_be_bytes(), &[1u8; 100_000]);
    }
    let err = t.get(b"x", false).unwrap_err();
    println!("{err}");
    assert_eq!(err.code, KvError::TRANSACTION_TOO_LARGE, "{err}");
    let err = t.commit().unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_LARGE, "{err}");
    assert!(!kv.is_lost(), "the server is not presumed gone");
    still_serves(&kv, b"k");
}

#[test]
fn batch_that_could_answer_too_much_is_refused() {
    let limits = ServerLimits {
        max_response_frame: 1 << 20,
        ..ServerLimits::default()
    };
    let (_dir, _server, path) = serve(limits);
    let kv = RemoteKv::connect(&path).unwrap();
    let mut t = kv.begin().unwrap();
    let reads: Vec<_> = (0..20u32)
        .map(|i| pagestore::kv::ReadRequest::Get(i.to_be_bytes().to_vec()))
        .collect();
    let err = t.get_batch(&reads, true).unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_LARGE, "{err}");
    assert!(err.message.contains("split it"), "{err}");
    // Smaller batches are fine, on the same transaction.
    t.get_batch(&reads[..5], true).unwrap();
}
