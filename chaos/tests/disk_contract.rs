//! One contract suite for every [`Disk`]: the real `FileDisk` on a temporary directory and the
//! fault-free `FaultyDisk`. If the simulated disk drifts from the real one, a simulation proves
//! things about a broker that does not exist; these tests keep the two honest.
//!
//! In the normal build both halves run on tokio. In the simulation build (`--cfg madsim`) only
//! the `FaultyDisk` half runs, under the simulator, with latency on, so every operation yields
//! and resumes in virtual time.

use std::io::ErrorKind;
use std::path::Path;

use broker::disk::{self, Disk, OpenMode};

/// Each test is an async fn taking the disk and an existing, empty root directory. The macro
/// runs each one against both implementations, in modules named after them.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        #[cfg(not(madsim))]
        mod file_disk {
            $(
                #[tokio::test]
                async fn $test() {
                    let root = tempfile::tempdir().unwrap();
                    super::$test(&broker::disk::FileDisk::new(), root.path()).await;
                }
            )*
        }

        mod faulty_disk {
            $(
                #[tokio::test]
                async fn $test() {
                    let disk = super::fault_free_faulty_disk();
                    let root = std::path::Path::new("/data/root");
                    broker::disk::Disk::create_dir_all(&disk, root).await.unwrap();
                    #[cfg(madsim)]
                    let start = madsim::time::TimeHandle::current().elapsed();
                    super::$test(&disk, root).await;
                    // Under the simulator every operation sleeps: virtual time must have passed.
                    #[cfg(madsim)]
                    assert!(madsim::time::TimeHandle::current().elapsed() > start);
                }
            )*
        }
    };
}

contract!(
    append_returns_the_position_where_the_bytes_start,
    read_at_returns_what_was_appended_before_any_sync,
    a_read_that_crosses_the_end_of_a_file_is_short,
    read_vec_at_returns_the_same_bytes_as_read_at_and_is_short_at_the_end,
    a_read_at_the_end_of_a_file_returns_no_bytes,
    truncate_cuts_the_file_and_the_next_append_starts_at_the_cut,
    a_reopened_file_has_every_byte_appended_before,
    list_returns_files_and_directories_sorted_bytewise,
    listing_a_missing_directory_is_not_found,
    opening_a_missing_file_as_existing_is_not_found,
    opening_a_taken_name_with_create_new_is_already_exists,
    opening_with_create_keeps_an_existing_file_intact,
    rename_replaces_the_target_and_open_handles_keep_their_files,
    remove_deletes_the_name_and_a_second_remove_is_not_found,
    an_open_handle_keeps_reading_and_writing_after_its_name_is_removed,
    remove_dir_all_removes_a_directory_and_everything_under_it,
    create_dir_all_makes_missing_parents_and_accepts_existing_ones,
    create_dirs_makes_every_named_directory_and_accepts_existing_ones,
    create_dir_makes_one_directory_whose_parent_exists_and_renames_into_place,
    write_file_atomic_replaces_the_contents_and_leaves_no_temporary_file,
    sync_and_sync_dir_succeed_on_a_healthy_disk,
    a_locked_directory_refuses_a_second_lock_until_the_first_is_dropped,
);

#[cfg(not(madsim))]
fn fault_free_faulty_disk() -> chaos::FaultyDisk {
    chaos::FaultyDisk::new(1, chaos::FaultyDiskConfig::default())
}

#[cfg(madsim)]
fn fault_free_faulty_disk() -> chaos::FaultyDisk {
    use std::time::Duration;
    let config = chaos::FaultyDiskConfig {
        latency: Some((Duration::from_micros(50), Duration::from_millis(5))),
        ..Default::default()
    };
    chaos::FaultyDisk::new(madsim::rand::random(), config)
}

async fn append_returns_the_position_where_the_bytes_start(disk: &dyn Disk, root: &Path) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    assert!(file.is_empty());
    assert_eq!(file.append(b"hello").await.unwrap(), 0);
    assert_eq!(file.append(b"").await.unwrap(), 5);
    assert_eq!(file.append(b", world").await.unwrap(), 5);
    assert_eq!(file.len(), 12);
    assert!(!file.is_empty());
}

async fn read_at_returns_what_was_appended_before_any_sync(disk: &dyn Disk, root: &Path) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    file.append(&data[..1000]).await.unwrap();
    file.append(&data[1000..]).await.unwrap();
    let mut buf = vec![0u8; 1500];
    assert_eq!(file.read_at(900, &mut buf).await.unwrap(), 1500);
    assert_eq!(buf, data[900..2400]);
}

async fn a_read_that_crosses_the_end_of_a_file_is_short(disk: &dyn Disk, root: &Path) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    file.append(b"0123456789").await.unwrap();
    let mut buf = [0xffu8; 8];
    assert_eq!(file.read_at(6, &mut buf).await.unwrap(), 4);
    assert_eq!(&buf[..4], b"6789");
    assert_eq!(&buf[4..], [0xff; 4], "bytes past the end are left alone");
}

async fn read_vec_at_returns_the_same_bytes_as_read_at_and_is_short_at_the_end(
    disk: &dyn Disk,
    root: &Path,
) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
    file.append(&data).await.unwrap();
    assert_eq!(
        file.read_vec_at(4_000, 50_000).await.unwrap(),
        data[4_000..54_000]
    );
    assert_eq!(
        file.read_vec_at(90_000, 50_000).await.unwrap(),
        data[90_000..]
    );
    assert!(file.read_vec_at(100_000, 10).await.unwrap().is_empty());
    assert!(file.read_vec_at(0, 0).await.unwrap().is_empty());
}

async fn a_read_at_the_end_of_a_file_returns_no_bytes(disk: &dyn Disk, root: &Path) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(file.read_at(0, &mut buf).await.unwrap(), 0);
    file.append(b"abc").await.unwrap();
    assert_eq!(file.read_at(3, &mut buf).await.unwrap(), 0);
    assert_eq!(file.read_at(100, &mut buf).await.unwrap(), 0);
}

async fn truncate_cuts_the_file_and_the_next_append_starts_at_the_cut(
    disk: &dyn Disk,
    root: &Path,
) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    file.append(b"keep-drop").await.unwrap();
    file.sync().await.unwrap();
    file.truncate(4).await.unwrap();
    assert_eq!(file.len(), 4);
    assert_eq!(file.append(b"!").await.unwrap(), 4);
    assert_eq!(
        disk::read_file(disk, &root.join("f")).await.unwrap(),
        b"keep!"
    );
    file.truncate(5).await.unwrap();
    file.truncate(0).await.unwrap();
    assert!(file.is_empty());
}

async fn a_reopened_file_has_every_byte_appended_before(disk: &dyn Disk, root: &Path) {
    let path = root.join("f");
    let file = disk.open(&path, OpenMode::CreateNew).await.unwrap();
    file.append(b"first").await.unwrap();
    drop(file);
    let file = disk.open(&path, OpenMode::Existing).await.unwrap();
    assert_eq!(file.len(), 5);
    assert_eq!(file.append(b"second").await.unwrap(), 5);
    assert_eq!(disk::read_file(disk, &path).await.unwrap(), b"firstsecond");
}

async fn list_returns_files_and_directories_sorted_bytewise(disk: &dyn Disk, root: &Path) {
    assert!(disk.list(root).await.unwrap().is_empty());
    for name in ["b", "a.log", "B", "10", "9", "a"] {
        disk.open(&root.join(name), OpenMode::CreateNew)
            .await
            .unwrap();
    }
    disk.create_dir_all(&root.join("sub/deeper")).await.unwrap();
    disk.open(&root.join("sub/inner"), OpenMode::CreateNew)
        .await
        .unwrap();
    let names = disk.list(root).await.unwrap();
    assert_eq!(names, ["10", "9", "B", "a", "a.log", "b", "sub"]);
    assert_eq!(
        disk.list(&root.join("sub")).await.unwrap(),
        ["deeper", "inner"]
    );
    assert!(disk::exists(disk, root, "a.log").await.unwrap());
    assert!(!disk::exists(disk, root, "c").await.unwrap());
}

async fn listing_a_missing_directory_is_not_found(disk: &dyn Disk, root: &Path) {
    let err = disk.list(&root.join("missing")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!disk::exists(disk, &root.join("missing"), "x")
        .await
        .unwrap());
}

async fn opening_a_missing_file_as_existing_is_not_found(disk: &dyn Disk, root: &Path) {
    let err = disk
        .open(&root.join("missing"), OpenMode::Existing)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.raw_os_error(), Some(2));
    let err = disk
        .open(&root.join("no/such/dir"), OpenMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        disk.list(root).await.unwrap().is_empty(),
        "a failed open creates nothing"
    );
}

async fn opening_a_taken_name_with_create_new_is_already_exists(disk: &dyn Disk, root: &Path) {
    let path = root.join("f");
    disk.open(&path, OpenMode::CreateNew)
        .await
        .unwrap()
        .append(b"x")
        .await
        .unwrap();
    let err = disk.open(&path, OpenMode::CreateNew).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.raw_os_error(), Some(17));
    assert_eq!(disk::read_file(disk, &path).await.unwrap(), b"x");
}

async fn opening_with_create_keeps_an_existing_file_intact(disk: &dyn Disk, root: &Path) {
    let path = root.join("f");
    let created = disk.open(&path, OpenMode::Create).await.unwrap();
    assert!(created.is_empty());
    created.append(b"contents").await.unwrap();
    let reopened = disk.open(&path, OpenMode::Create).await.unwrap();
    assert_eq!(reopened.len(), 8);
}

async fn rename_replaces_the_target_and_open_handles_keep_their_files(
    disk: &dyn Disk,
    root: &Path,
) {
    let (from, to) = (root.join("new"), root.join("current"));
    let old = disk.open(&to, OpenMode::CreateNew).await.unwrap();
    old.append(b"old").await.unwrap();
    let new = disk.open(&from, OpenMode::CreateNew).await.unwrap();
    new.append(b"new").await.unwrap();
    disk.rename(&from, &to).await.unwrap();
    assert_eq!(disk.list(root).await.unwrap(), ["current"]);
    assert_eq!(disk::read_file(disk, &to).await.unwrap(), b"new");
    // Both handles still reach their own files, whatever their names are now.
    let mut buf = [0u8; 3];
    old.read_at(0, &mut buf).await.unwrap();
    assert_eq!(&buf, b"old");
    new.append(b"er").await.unwrap();
    assert_eq!(disk::read_file(disk, &to).await.unwrap(), b"newer");
    let err = disk.rename(&from, &to).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn remove_deletes_the_name_and_a_second_remove_is_not_found(disk: &dyn Disk, root: &Path) {
    let path = root.join("f");
    disk.open(&path, OpenMode::CreateNew).await.unwrap();
    disk.remove(&path).await.unwrap();
    assert!(disk.list(root).await.unwrap().is_empty());
    assert_eq!(
        disk.remove(&path).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!disk::remove_if_exists(disk, &path).await.unwrap());
    let err = disk.open(&path, OpenMode::Existing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn an_open_handle_keeps_reading_and_writing_after_its_name_is_removed(
    disk: &dyn Disk,
    root: &Path,
) {
    let path = root.join("segment");
    let file = disk.open(&path, OpenMode::CreateNew).await.unwrap();
    file.append(b"still here").await.unwrap();
    assert!(disk::remove_if_exists(disk, &path).await.unwrap());
    let mut buf = [0u8; 10];
    assert_eq!(file.read_at(0, &mut buf).await.unwrap(), 10);
    assert_eq!(&buf, b"still here");
    assert_eq!(file.append(b"!").await.unwrap(), 10);
    file.sync().await.unwrap();
    // The name is free again, for a new and empty file.
    let again = disk.open(&path, OpenMode::CreateNew).await.unwrap();
    assert!(again.is_empty());
}

async fn remove_dir_all_removes_a_directory_and_everything_under_it(disk: &dyn Disk, root: &Path) {
    let topic = root.join("topic-0");
    disk.create_dir_all(&topic.join("nested")).await.unwrap();
    disk.open(&topic.join("00.log"), OpenMode::CreateNew)
        .await
        .unwrap();
    disk.open(&topic.join("nested/x"), OpenMode::CreateNew)
        .await
        .unwrap();
    disk.remove_dir_all(&topic).await.unwrap();
    assert!(disk.list(root).await.unwrap().is_empty());
    assert_eq!(
        disk.list(&topic).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let err = disk.remove_dir_all(&topic).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    disk.sync_dir(root).await.unwrap();
}

async fn create_dir_all_makes_missing_parents_and_accepts_existing_ones(
    disk: &dyn Disk,
    root: &Path,
) {
    let deep = root.join("a/b/c");
    disk.create_dir_all(&deep).await.unwrap();
    disk.create_dir_all(&deep).await.unwrap();
    disk.create_dir_all(&root.join("a")).await.unwrap();
    assert_eq!(disk.list(root).await.unwrap(), ["a"]);
    assert_eq!(disk.list(&root.join("a/b")).await.unwrap(), ["c"]);
    assert!(disk.list(&deep).await.unwrap().is_empty());
}

async fn create_dir_makes_one_directory_whose_parent_exists_and_renames_into_place(
    disk: &dyn Disk,
    root: &Path,
) {
    let tmp = root.join("t-0.tmp");
    disk.create_dir(&tmp).await.unwrap();
    disk.create_dir(&tmp).await.unwrap();
    disk::write_file_whole(disk, &tmp.join("partition.metadata"), b"id")
        .await
        .unwrap();
    disk.sync_dir(&tmp).await.unwrap();
    disk.rename(&tmp, &root.join("t-0")).await.unwrap();
    disk.sync_dir(root).await.unwrap();
    assert_eq!(disk.list(root).await.unwrap(), ["t-0"]);
    assert_eq!(
        disk::read_file(disk, &root.join("t-0/partition.metadata"))
            .await
            .unwrap(),
        b"id"
    );
    let err = disk.create_dir(&root.join("a/b")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = disk
        .create_dir(&root.join("t-0/partition.metadata"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

async fn create_dirs_makes_every_named_directory_and_accepts_existing_ones(
    disk: &dyn Disk,
    root: &Path,
) {
    disk.create_dir_all(&root.join("b")).await.unwrap();
    let names = ["a".to_string(), "b".to_string(), "c".to_string()];
    disk.create_dirs(root, &names).await.unwrap();
    disk.create_dirs(root, &names).await.unwrap();
    disk.create_dirs(root, &[]).await.unwrap();
    assert_eq!(disk.list(root).await.unwrap(), names);
    for name in &names {
        assert!(disk.list(&root.join(name)).await.unwrap().is_empty());
    }
    let err = disk
        .create_dirs(&root.join("missing"), &names)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn write_file_atomic_replaces_the_contents_and_leaves_no_temporary_file(
    disk: &dyn Disk,
    root: &Path,
) {
    let path = root.join("checkpoint");
    disk::write_file_atomic(disk, &path, b"offset=1")
        .await
        .unwrap();
    assert_eq!(disk::read_file(disk, &path).await.unwrap(), b"offset=1");
    disk::write_file_atomic(disk, &path, b"offset=22")
        .await
        .unwrap();
    assert_eq!(disk::read_file(disk, &path).await.unwrap(), b"offset=22");
    assert_eq!(disk.list(root).await.unwrap(), ["checkpoint"]);
    // A temporary file left by a crash is replaced, not appended to.
    let tmp = root.join("checkpoint.tmp");
    disk.open(&tmp, OpenMode::CreateNew)
        .await
        .unwrap()
        .append(b"garbage")
        .await
        .unwrap();
    disk::write_file_atomic(disk, &path, b"").await.unwrap();
    assert_eq!(disk::read_file(disk, &path).await.unwrap(), b"");
    assert_eq!(disk.list(root).await.unwrap(), ["checkpoint"]);
    let err = disk::read_file(disk, &root.join("missing"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn sync_and_sync_dir_succeed_on_a_healthy_disk(disk: &dyn Disk, root: &Path) {
    let file = disk
        .open(&root.join("f"), OpenMode::CreateNew)
        .await
        .unwrap();
    file.sync().await.unwrap();
    file.append(b"data").await.unwrap();
    file.sync().await.unwrap();
    file.sync().await.unwrap();
    disk.sync_dir(root).await.unwrap();
    disk.sync_dir(root).await.unwrap();
    assert_eq!(
        disk::read_file(disk, &root.join("f")).await.unwrap(),
        b"data"
    );
}

/// Two brokers on one data directory lost acknowledged records: the second lock must fail
/// while the first is held (for `FileDisk`, through a second open file description, as a
/// second process would), and succeed once it is dropped.
async fn a_locked_directory_refuses_a_second_lock_until_the_first_is_dropped(
    disk: &dyn Disk,
    root: &Path,
) {
    let dir = root.join("data");
    disk.create_dir_all(&dir).await.unwrap();
    let first = disk.lock_dir(&dir).await.expect("the first lock");
    match disk.lock_dir(&dir).await {
        Err(disk::LockDirError::InUse { dir: busy, .. }) => assert_eq!(busy, dir),
        other => panic!("a second lock while the first is held: {other:?}"),
    }
    // Another directory is not affected.
    disk.create_dir_all(&root.join("other")).await.unwrap();
    let other = disk
        .lock_dir(&root.join("other"))
        .await
        .expect("another dir");
    drop(first);
    let again = disk
        .lock_dir(&dir)
        .await
        .expect("a lock after the first was dropped");
    drop((again, other));
    // Some operation that takes time on the simulated disk (the lock itself takes none).
    disk.sync_dir(root).await.unwrap();
}
