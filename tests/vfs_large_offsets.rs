//! Offsets past 1 GiB (the lock-byte page) and 4 GiB through the VFS file
//! API, without writing gigabytes: pages are sparse in the store.

mod support;

const PS: usize = 65536;

#[test]
fn pages_past_4_gib() {
    let store = support::store();
    let name = support::name("big");
    let uri = store.uri(&name);
    let id = uri.rsplit("store=").next().unwrap_or("0").to_string();
    let mut raw = name.as_bytes().to_vec();
    raw.extend_from_slice(b"\0store\0");
    raw.extend_from_slice(id.as_bytes());
    raw.push(0);
    let mut f = vfs::testing::RawFile::open(&raw).unwrap_or_else(|rc| panic!("open: {rc}"));
    assert_eq!(f.lock(1), 0);
    assert_eq!(f.lock(2), 0);
    assert_eq!(f.lock(4), 0);
    let mut page1 = vec![0u8; PS];
    page1[..16].copy_from_slice(b"SQLite format 3\0");
    page1[16..18].copy_from_slice(&[0, 1]); // 65536
    page1[24..28].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(f.write(&page1, 0), 0);
    let far: i64 = (5 << 30) + PS as i64; // past 4 GiB
    assert_eq!(f.write(&[0xAB; PS], far), 0);
    assert_eq!(
        f.write(&[0xCD; PS], 1 << 30),
        0,
        "the VFS itself does not refuse the lock-byte page"
    );
    assert_eq!(f.sync(), 0);
    assert_eq!(f.unlock(0), 0);

    assert_eq!(f.lock(1), 0);
    assert_eq!(f.size(), (0, far + PS as i64));
    let mut b = vec![0u8; PS];
    assert_eq!(f.read(&mut b, far), 0);
    assert!(b.iter().all(|x| *x == 0xAB));
    // A page never written below the end reads as zeros (a hole).
    assert_eq!(f.read(&mut b, 2 << 30), 0);
    assert!(b.iter().all(|x| *x == 0));
    // A read past the end is short and zero-filled.
    let mut b = vec![1u8; 100];
    assert_eq!(
        f.read(&mut b, far + PS as i64),
        libsqlite3_sys::SQLITE_IOERR_SHORT_READ
    );
    assert!(b.iter().all(|x| *x == 0));
    assert_eq!(f.unlock(0), 0);
    assert_eq!(vfs::panics_caught(), 0);
}
