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

/// A leaf certificate and its private key, as PEM.
pub struct Leaf {
    /// The certificate (the leaf alone; the root is the CA's).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
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

    /// A leaf certificate for `names` (each a DNS name or an IP address), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("leaf", |n| n.as_str()),
        );
        let cert = params
            .signed_by(&key, &self.root, &self.key)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
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
