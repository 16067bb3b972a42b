//! The streaming paths between a database and the store: encrypt-and-upload, and
//! verify-and-decrypt.
//!
//! age's encryptor and decryptor are blocking `Write`/`Read` adapters, so they run on a blocking
//! thread. The async side (the object store) and that thread exchange [`CHUNK`]-sized pieces over
//! channels of [`DEPTH`] pieces: memory in flight stays bounded whatever the database's size,
//! and a slow side slows the other down.

use std::io::{self, Read, Write};

use age::secrecy::ExposeSecret as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::store::Store;
use super::{hex, BackupError};

/// Size of the pieces handed between the blocking thread and the async side.
const CHUNK: usize = 1 << 20;
/// Pieces a channel holds before the sender waits.
const DEPTH: usize = 4;
/// Multipart part size (S3's minimum is 5 MiB for all parts but the last).
const PART: usize = 8 << 20;
/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Size and SHA-256 of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest256 {
    pub(crate) size: i64,
    pub(crate) sha256: String,
}

/// Counts and hashes bytes as they pass.
#[derive(Default)]
struct Tally {
    hasher: Sha256,
    size: i64,
}

impl Tally {
    fn add(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as i64;
    }

    fn finish(self) -> Digest256 {
        Digest256 {
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
        }
    }
}

/// The blocking side's output: hashes what it is given and sends it on in [`CHUNK`]s.
struct ChunkSink {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    tally: Tally,
}

impl ChunkSink {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn finish(mut self) -> io::Result<Digest256> {
        self.send_buffered()?;
        Ok(self.tally.finish())
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.tally.add(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The blocking side's input: reads the pieces the async side receives.
struct ChunkSource {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkSource {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Encrypt what `source` yields to `recipient` and store it at `key` with a multipart upload.
/// `source` is read on a blocking thread. Returns the stored object's size and SHA-256.
///
/// The object appears in the store only once complete (a multipart upload, or the local
/// store's staged file, becomes visible on completion); on any error the upload is aborted.
pub(crate) async fn encrypt_upload<R: Read + Send + 'static>(
    store: &Store,
    key: &str,
    recipient: age::x25519::Recipient,
    mut source: R,
) -> Result<Digest256, BackupError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let encrypt = tokio::task::spawn_blocking(move || -> Result<Digest256, BackupError> {
        let sink = ChunkSink {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            tally: Tally::default(),
        };
        let recipients = [&recipient as &dyn age::Recipient];
        let encryptor = age::Encryptor::with_recipients(recipients.into_iter())
            .map_err(|e| BackupError::Encrypt(e.to_string()))?;
        let mut writer = encryptor.wrap_output(sink)?;
        io::copy(&mut source, &mut writer)?;
        Ok(writer.finish()?.finish()?)
    });
    let path = Store::path(key)?;
    let upload = store.objects.put_multipart(&path).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let uploaded = async {
        while let Some(chunk) = rx.recv().await {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.put(chunk);
        }
        Ok::<_, BackupError>(())
    }
    .await;
    // Dropping the receiver makes a still-running encryptor fail with BrokenPipe, which ends it
    // (and the dump feeding it).
    drop(rx);
    let encrypted = encrypt
        .await
        .map_err(|e| BackupError::Encrypt(format!("encryption thread: {e}")))?;
    match (uploaded, encrypted) {
        (Ok(()), Ok(digest)) => {
            writer.finish().await?;
            Ok(digest)
        }
        (Err(e), _) | (Ok(()), Err(e)) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting a failed backup upload failed");
            }
            Err(e)
        }
    }
}

/// Read the object at `key` through once and return its size and SHA-256.
pub(crate) async fn digest(store: &Store, key: &str) -> Result<Digest256, BackupError> {
    let mut stream = store.objects.get(&Store::path(key)?).await?.into_stream();
    let mut tally = Tally::default();
    while let Some(chunk) = stream.next().await {
        tally.add(&chunk?);
    }
    Ok(tally.finish())
}

/// Check that the object at `key` is the one the catalog recorded (size and SHA-256).
pub(crate) async fn verify(
    store: &Store,
    key: &str,
    expected: &Digest256,
) -> Result<(), BackupError> {
    let actual = digest(store, key).await?;
    check(expected, &actual)
}

fn check(expected: &Digest256, actual: &Digest256) -> Result<(), BackupError> {
    if expected == actual {
        Ok(())
    } else {
        Err(BackupError::Mismatch {
            expected: expected.sha256.clone(),
            expected_size: expected.size,
            actual: actual.sha256.clone(),
            actual_size: actual.size,
        })
    }
}

/// The age identities in `path` (the configured `backups.identity_file`).
pub(crate) fn identities(
    path: Option<&std::path::Path>,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, BackupError> {
    let path = path.ok_or(BackupError::NotConfigured("backups.identity_file"))?;
    let file = std::fs::File::open(path)?;
    age::IdentityFile::from_buffer(io::BufReader::new(file))
        .map_err(|e| BackupError::Decrypt(format!("reading backups.identity_file: {e}")))?
        .into_identities()
        .map_err(|e| BackupError::Decrypt(format!("reading backups.identity_file: {e}")))
}

/// Decrypt the object at `key` into `sink` (written on a blocking thread), hashing the object
/// as it is read. Returns `sink` (not flushed or closed) only when the whole object decrypted
/// and its size and SHA-256 are `expected`: the caller commits what it wrote (closes a
/// `pg_restore`'s input, renames a file) only then, and discards it otherwise.
pub(crate) async fn decrypt_into<W: Write + Send + 'static>(
    store: &Store,
    key: &str,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    sink: W,
    expected: &Digest256,
) -> Result<W, BackupError> {
    let mut stream = store.objects.get(&Store::path(key)?).await?.into_stream();
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let decrypt = tokio::task::spawn_blocking(move || -> Result<W, BackupError> {
        let mut sink = sink;
        let source = io::BufReader::with_capacity(
            64 << 10,
            ChunkSource {
                rx,
                current: Bytes::new(),
            },
        );
        let decryptor = age::Decryptor::new_buffered(source)
            .map_err(|e| BackupError::Decrypt(e.to_string()))?;
        let mut plain = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| BackupError::Decrypt(e.to_string()))?;
        // A read error here is the age stream failing authentication (tampered or truncated
        // object): name it as a decryption failure. Write errors are the sink's own.
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match plain.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BackupError::Decrypt(e.to_string())),
            };
            sink.write_all(&buf[..n])?;
        }
        Ok(sink)
    });
    // Read the whole object even when the decryptor is done early, so the digest covers every
    // byte (trailing bytes after the age stream count as a mismatch, not as ignorable).
    let mut tally = Tally::default();
    let mut forward = Some(tx);
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            tally.add(&chunk);
            if let Some(tx) = &forward {
                if tx.send(chunk).await.is_err() {
                    forward = None; // The decryptor stopped (finished or failed).
                }
            }
        }
        Ok::<_, BackupError>(())
    }
    .await;
    drop(forward);
    let decrypted = decrypt
        .await
        .map_err(|e| BackupError::Decrypt(format!("decryption thread: {e}")))?;
    read?;
    check(expected, &tally.finish())?;
    decrypted
}

/// An age identity as text, for `tenantgate dev`'s generated identity file.
pub(crate) fn new_identity() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_string(), public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sink_hashes_and_chunks() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut sink = ChunkSink {
            tx,
            buf: BytesMut::new(),
            tally: Tally::default(),
        };
        let data = vec![7u8; CHUNK * 2 + 10];
        sink.write_all(&data).unwrap();
        let digest = sink.finish().unwrap();
        let mut got = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            assert!(chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, data);
        assert_eq!(digest.size, data.len() as i64);
        assert_eq!(digest.sha256, hex(&Sha256::digest(&data)));
    }
}
