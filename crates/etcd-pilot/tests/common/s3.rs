//! Real S3 servers on loopback for the backup tests: moto and SeaweedFS, both installed by
//! `scripts/setup.sh` into the project venv. Each test starts its own server on ports derived
//! from its subnet, creates its bucket with boto3, and stops the server by PID on drop.
//! A missing server binary fails the test under `CI=true` and is reported as skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const ACCESS_KEY: &str = "pilot-test";
pub const SECRET_KEY: &str = "pilot-test-secret";
pub const BUCKET: &str = "backups";

const VENV: &str = "/opt/etcd-pilot-venv";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Moto,
    Seaweed,
}

/// A running S3 server.
pub struct S3 {
    pub kind: Kind,
    pub port: u16,
    dir: PathBuf,
    base: u16,
    child: Option<Child>,
}

fn venv_bin(name: &str) -> Option<PathBuf> {
    super::required(&Path::new(VENV).join("bin").join(name))
}

impl S3 {
    /// Starts a server of `kind` with ports from `base` (base .. base+3, and base+10000 ..
    /// for SeaweedFS's gRPC), storing under `dir`; creates the bucket. `None` when missing
    /// outside CI.
    pub async fn start(kind: Kind, base: u16, dir: &Path) -> Option<Self> {
        let bin = venv_bin(match kind {
            Kind::Moto => "moto_server",
            Kind::Seaweed => "weed",
        })?;
        venv_bin("python")?;
        std::fs::create_dir_all(dir).unwrap();
        let mut s3 = Self {
            kind,
            port: if kind == Kind::Moto { base } else { base + 3 },
            dir: dir.to_owned(),
            base,
            child: None,
        };
        s3.spawn(&bin);
        s3.wait_up().await;
        s3.create_bucket();
        Some(s3)
    }

    fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let mut command = Command::new(bin);
        match self.kind {
            Kind::Moto => {
                command.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]);
            }
            Kind::Seaweed => {
                let config = self.dir.join("s3.json");
                std::fs::write(
                    &config,
                    format!(
                        r#"{{"identities":[{{"name":"pilot","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
                    ),
                )
                .unwrap();
                let data = self.dir.join("data");
                std::fs::create_dir_all(&data).unwrap();
                let b = self.base;
                command.args([
                    "server".to_owned(),
                    "-ip=127.0.0.1".to_owned(),
                    "-ip.bind=127.0.0.1".to_owned(),
                    "-master.telemetry=false".to_owned(),
                    format!("-dir={}", data.display()),
                    format!("-master.port={b}"),
                    format!("-master.port.grpc={}", b + 10000),
                    "-master.volumeSizeLimitMB=64".to_owned(),
                    format!("-volume.port={}", b + 1),
                    format!("-volume.port.grpc={}", b + 10001),
                    "-volume.max=100".to_owned(),
                    "-filer".to_owned(),
                    format!("-filer.port={}", b + 2),
                    format!("-filer.port.grpc={}", b + 10002),
                    "-s3".to_owned(),
                    format!("-s3.port={}", b + 3),
                    format!("-s3.port.grpc={}", b + 10003),
                    format!("-s3.config={}", config.display()),
                    // Side services with fixed default ports: off, so servers run side by side.
                    "-s3.port.iceberg=0".to_owned(),
                    "-s3.port.lance=0".to_owned(),
                    format!("-debug.port={}", b + 4),
                    format!("-iam.port={}", b + 5),
                    format!("-mq.agent.port={}", b + 6),
                    format!("-mq.broker.port={}", b + 7),
                ]);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn wait_up(&self) {
        super::wait_http(&self.endpoint(), &self.dir.join("server.log")).await;
    }

    fn create_bucket(&self) {
        // SeaweedFS may need a few seconds after its port opens before its filer takes writes.
        let script = format!(
            "import boto3, time\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{ACCESS_KEY}', \
             aws_secret_access_key='{SECRET_KEY}', region_name='us-east-1')\n\
             for i in range(60):\n\
             \x20   try:\n\
             \x20       s3.create_bucket(Bucket='{BUCKET}'); break\n\
             \x20   except Exception as e:\n\
             \x20       if 'BucketAlready' in str(e): break\n\
             \x20       time.sleep(0.5)\n\
             else:\n\
             \x20   raise SystemExit('cannot create the bucket')\n",
            self.endpoint()
        );
        let status = Command::new(Path::new(VENV).join("bin/python"))
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "create bucket on {:?}", self.kind);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[backup]` section of a pilot config using this server, with `extra` lines.
    pub fn backup_config(&self, prefix: &str, extra: &str) -> String {
        format!(
            "\n[backup]\nurl = \"s3://{BUCKET}/{prefix}\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\n{extra}\n",
            self.endpoint()
        )
    }

    /// The environment the pilots need to sign requests.
    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// SIGKILL (SeaweedFS ignores SIGTERM), and wait for the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same server again on the same ports and data.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none());
        let bin = venv_bin(match self.kind {
            Kind::Moto => "moto_server",
            Kind::Seaweed => "weed",
        })
        .unwrap();
        self.spawn(&bin);
        self.wait_up().await;
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}
