//! A throwaway certificate authority for TLS tests: a self-signed root and leaf certificates it
//! signs for the names a test asks for (DNS names, or IP addresses such as `127.0.0.1`).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A test CA: its root certificate is written to [`TestCa::ca_file`] for clients to trust.
pub struct TestCa {
    root: rcgen::Certificate,
    key: KeyPair,
    dir: tempfile::TempDir,
}

/// A leaf certificate and its private key.
pub struct Leaf {
    /// The certificate as PEM (the leaf alone; the root is the CA's).
    pub cert_pem: String,
    /// The leaf followed by the root, as a server presents it.
    pub chain_pem: String,
    /// The private key as PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate as DER.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new root named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let root = params.self_signed(&key).expect("self-sign CA");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), root.pem()).expect("write ca.pem");
        TestCa { root, key, dir }
    }

    /// The root certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root certificate as PEM.
    pub fn ca_pem(&self) -> String {
        self.root.pem()
    }

    /// The root certificate as DER (for a client's root store).
    pub fn ca_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// A leaf certificate for `names` (each a DNS name or an IP address), signed by this CA,
    /// valid from now for rcgen's default span.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.sign(names, |_| {})
    }

    /// As [`TestCa::issue`], valid from 1 January of `from` to 1 January of `to`.
    pub fn issue_valid(&self, names: &[&str], from: i32, to: i32) -> Leaf {
        self.sign(names, |params| {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        })
    }

    fn sign(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("leaf", |n| n.as_str()),
        );
        adjust(&mut params);
        let cert = params
            .signed_by(&key, &self.root, &self.key)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            chain_pem: cert.pem() + &self.root.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Write the certificate and key as `NAME.pem` and `NAME.key` in `dir`; their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}
