"""Local Apache Kafka (KRaft, one combined broker+controller) and Redis on 127.0.0.1, without Docker.

Kafka's jars come from Maven Central once (`mvn dependency:copy-dependencies`) into
`$STREAMWARDEN_HOME/kafka-<version>/libs`; storage is formatted with
`kafka.tools.StorageTool format --standalone`; the broker runs as `java kafka.Kafka server.properties`.
Redis is Debian's `redis-server` (installed with apt-get when missing and we are root).
Both are started in their own session, their PIDs recorded under `$STREAMWARDEN_HOME/run/`.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamwarden.errors import StreamwardenError

DEFAULT_KAFKA_VERSION = "4.1.2"


class ServiceError(StreamwardenError):
    """A local service could not be fetched, installed or started."""


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int | None, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (so a reused PID is not ours)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "Z"
    return marker in cmdline and state != "Z"


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _template(name: str) -> str:
    return resources.files("pipeline").joinpath("services_files", name).read_text()


@dataclass(frozen=True)
class LocalServices:
    home: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    kafka_version: str = DEFAULT_KAFKA_VERSION
    kafka_heap: str = "768m"
    start_timeout_s: float = 120.0
    # extra SASL_SSL (SCRAM-SHA-512) and SSL listeners on kafka_port+2 / kafka_port+3
    secure: bool = False
    scram_user: str = "streamwarden"

    @classmethod
    def from_env(cls) -> LocalServices:
        env = os.environ
        home = Path(env.get("STREAMWARDEN_HOME", Path.home() / ".cache" / "streamwarden")).expanduser()
        try:
            kafka_port = int(env.get("STREAMWARDEN_KAFKA_PORT", "9092"))
            redis_port = int(env.get("STREAMWARDEN_REDIS_PORT", "6379"))
            controller_port = int(env.get("STREAMWARDEN_KAFKA_CONTROLLER_PORT", str(kafka_port + 1)))
        except ValueError as exc:
            raise ServiceError(
                f"STREAMWARDEN_KAFKA_PORT / STREAMWARDEN_REDIS_PORT must be integers: {exc}"
            ) from exc
        return cls(
            home=home,
            kafka_port=kafka_port,
            controller_port=controller_port,
            redis_port=redis_port,
            kafka_version=env.get("STREAMWARDEN_KAFKA_VERSION", DEFAULT_KAFKA_VERSION),
            secure=env.get("STREAMWARDEN_KAFKA_SECURE", "") in ("1", "true", "yes"),
        )

    # ---- addresses and paths -------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port + 2}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port + 3}"

    @property
    def tls_dir(self) -> Path:
        return self.kafka_run / "tls"

    @property
    def scram_password(self) -> str:
        """The SCRAM user's password, made once per broker and kept (mode 600) in its run folder."""
        path = self.kafka_run / "scram-password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.urlsafe_b64encode(os.urandom(18)).decode())
            path.chmod(0o600)
        return path.read_text().strip()

    def client_security(self, protocol: str = "SASL_SSL") -> dict[str, str]:
        """kafka-python settings for the secure listeners of a `secure=True` broker."""
        config = {"security_protocol": protocol, "ssl_cafile": str(self.tls_dir / "ca.pem"), "ssl_check_hostname": True}
        if protocol == "SASL_SSL":
            config |= {
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": self.scram_user,
                "sasl_plain_password": self.scram_password,
            }
        return config

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_libs(self) -> Path:
        return self.home / f"kafka-{self.kafka_version}" / "libs"

    @property
    def kafka_run(self) -> Path:
        return self.home / "run" / f"kafka-{self.kafka_port}"

    @property
    def redis_run(self) -> Path:
        return self.home / "run" / f"redis-{self.redis_port}"

    def _pid(self, run_dir: Path, name: str) -> int | None:
        try:
            return int((run_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    # ---- health --------------------------------------------------------------------------
    def kafka_running(self) -> bool:
        return _pid_alive(self._pid(self.kafka_run, "kafka"), "kafka.Kafka")

    def redis_running(self) -> bool:
        return _pid_alive(self._pid(self.redis_run, "redis"), "redis-server")

    def kafka_healthy(self, timeout_s: float = 5.0) -> bool:
        if not _port_open(self.kafka_port):
            return False
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.kafka_bootstrap,
                request_timeout_ms=int(timeout_s * 1000),
                client_id="streamwarden-dev",
            )
            try:
                admin.list_topics()
                return True
            finally:
                admin.close()
        except Exception:
            return False

    def redis_healthy(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    # ---- start / stop --------------------------------------------------------------------
    def ensure_up(self, verbose: bool = False) -> bool:
        """Start whatever is not running. Returns True when this call started something."""
        started = False
        if self.kafka_running() and self.kafka_healthy():
            _say(verbose, f"kafka already running at {self.kafka_bootstrap}")
        else:
            self.start_kafka(verbose)
            started = True
        if self.redis_running() and self.redis_healthy():
            _say(verbose, f"redis already running at {self.redis_url}")
        else:
            self.start_redis(verbose)
            started = True
        return started

    def fetch_kafka(self, verbose: bool = False) -> Path:
        """Download Kafka's jars from Maven Central once; returns the libs folder."""
        if any(self.kafka_libs.glob("kafka_2.13-*.jar")):
            return self.kafka_libs
        debian_tool("java", "openjdk-17-jre-headless")
        mvn = debian_tool("mvn", "maven")
        build = self.kafka_libs.parent
        build.mkdir(parents=True, exist_ok=True)
        (build / "pom.xml").write_text(_template("kafka-pom.xml").replace("@KAFKA_VERSION@", self.kafka_version))
        _say(verbose, f"fetching Apache Kafka {self.kafka_version} jars from Maven Central into {self.kafka_libs}")
        tmp_libs = build / "libs.partial"
        shutil.rmtree(tmp_libs, ignore_errors=True)
        proc = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={tmp_libs}"],
            cwd=build,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ServiceError(f"mvn could not fetch Kafka {self.kafka_version}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        tmp_libs.rename(self.kafka_libs)
        return self.kafka_libs

    def _java(self, main: str, *args: str, log: Path | None = None, background: bool = False) -> subprocess.Popen | subprocess.CompletedProcess:
        cmd = [
            "java",
            f"-Xmx{self.kafka_heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.kafka_run / 'log4j2.yaml'}",
            "-cp",
            f"{self.kafka_libs}/*",
            main,
            *args,
        ]
        if background:
            assert log is not None
            with log.open("ab") as out:
                return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.kafka_run)
        return subprocess.run(cmd, capture_output=True, text=True, cwd=self.kafka_run)

    def start_kafka(self, verbose: bool = False) -> None:
        self.fetch_kafka(verbose)
        if _port_open(self.kafka_port) or _port_open(self.controller_port):
            raise ServiceError(
                f"port {self.kafka_port} or {self.controller_port} on 127.0.0.1 is taken by another process: "
                "stop it or choose other ports with STREAMWARDEN_KAFKA_PORT"
            )
        run = self.kafka_run
        data = run / "data"
        run.mkdir(parents=True, exist_ok=True)
        (run / "log4j2.yaml").write_text(_template("log4j2.yaml"))
        props = (
            _template("server.properties")
            .replace("@PORT@", str(self.kafka_port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(data))
        )
        scram: list[str] = []
        if self.secure:
            props = self._secure_properties(props)
            scram = ["--add-scram", f"SCRAM-SHA-512=[name={self.scram_user},password={self.scram_password}]"]
        (run / "server.properties").write_text(props)
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            proc = self._java(
                # "=" form: a base64 id may start with "-", which argparse would take for an option
                "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}",
                "-c", str(run / "server.properties"), *scram,
            )  # fmt: skip
            if proc.returncode != 0:
                raise ServiceError(f"formatting Kafka storage failed:\n{proc.stdout}\n{proc.stderr}")
        log = run / "kafka.log"
        _say(verbose, f"starting kafka on {self.kafka_bootstrap} (log: {log})")
        proc = self._java("kafka.Kafka", str(run / "server.properties"), log=log, background=True)
        (run / "kafka.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"kafka exited with code {proc.returncode} while starting; log tail:\n{_tail(log)}")
            if self.kafka_healthy(timeout_s=3):
                _say(verbose, f"kafka ready at {self.kafka_bootstrap}")
                return
            time.sleep(0.5)
        self._stop(run, "kafka", "kafka.Kafka")
        raise ServiceError(f"kafka did not answer within {self.start_timeout_s:.0f} s; log tail:\n{_tail(log)}")

    def _secure_properties(self, props: str) -> str:
        """Add SASL_SSL (SCRAM-SHA-512) and SSL listeners, with a self-made CA and server certificate."""
        self._make_tls()
        sasl, ssl = self.kafka_port + 2, self.kafka_port + 3
        lines = []
        for line in props.splitlines():
            if line.startswith("listeners="):
                line += f",SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{ssl}"
            elif line.startswith("advertised.listeners="):
                line += f",SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{ssl}"
            elif line.startswith("listener.security.protocol.map="):
                line += ",SASL_SSL:SASL_SSL,SSL:SSL"
            lines.append(line)
        tls = self.tls_dir
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls / 'server-keystore.pem'}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls / 'ca.pem'}",
            "ssl.endpoint.identification.algorithm=",
        ]
        return "\n".join(lines) + "\n"

    def _make_tls(self) -> None:
        tls = self.tls_dir
        if (tls / "server-keystore.pem").exists():
            return
        openssl = debian_tool("openssl", "openssl")
        tls.mkdir(parents=True, exist_ok=True)

        def run(*args: str) -> None:
            proc = subprocess.run([openssl, *args], cwd=tls, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ServiceError(f"openssl {args[0]} failed: {proc.stderr[-2000:]}")

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=streamwarden-dev-ca",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
        (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "365", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
        run("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")
        (tls / "server-keystore.pem").write_text((tls / "server.pk8").read_text() + (tls / "server.pem").read_text())
        for name in ("ca.key", "server.key", "server.pk8", "server-keystore.pem"):
            (tls / name).chmod(0o600)

    def start_redis(self, verbose: bool = False) -> None:
        binary = debian_tool("redis-server", "redis-server")
        if _port_open(self.redis_port):
            raise ServiceError(
                f"port {self.redis_port} on 127.0.0.1 is taken by another process (a system redis?): "
                "stop it or choose another port with STREAMWARDEN_REDIS_PORT"
            )
        run = self.redis_run
        run.mkdir(parents=True, exist_ok=True)
        log = run / "redis.log"
        _say(verbose, f"starting redis on {self.redis_url} (log: {log})")
        cmd = [
            binary, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(run),
            "--daemonize", "no", "--save", "", "--appendonly", "yes", "--logfile", str(log),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        (run / "redis.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"redis-server exited with code {proc.returncode}; log tail:\n{_tail(log)}")
            if self.redis_healthy():
                _say(verbose, f"redis ready at {self.redis_url}")
                return
            time.sleep(0.1)
        self._stop(run, "redis", "redis-server")
        raise ServiceError(f"redis did not answer within 30 s; log tail:\n{_tail(log)}")

    def _stop(self, run: Path, name: str, marker: str, timeout_s: float = 30.0) -> bool:
        pid = self._pid(run, name)
        if not _pid_alive(pid, marker):
            (run / f"{name}.pid").unlink(missing_ok=True)
            return False
        assert pid is not None
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid, marker):
            time.sleep(0.2)
        if _pid_alive(pid, marker):
            os.killpg(pid, signal.SIGKILL)
            while _pid_alive(pid, marker):
                time.sleep(0.1)
        (run / f"{name}.pid").unlink(missing_ok=True)
        return True

    def down(self, verbose: bool = False) -> None:
        for run, name, marker in ((self.kafka_run, "kafka", "kafka.Kafka"), (self.redis_run, "redis", "redis-server")):
            _say(verbose, f"stopped {name}" if self._stop(run, name, marker) else f"{name} was not running")

    def print_status(self) -> bool:
        from rich.console import Console
        from rich.table import Table

        table = Table("service", "address", "pid", "health")
        kafka_ok = self.kafka_running() and self.kafka_healthy()
        redis_ok = self.redis_running() and self.redis_healthy()
        table.add_row("kafka", self.kafka_bootstrap, str(self._pid(self.kafka_run, "kafka") or "-"), _health(kafka_ok))
        table.add_row("redis", self.redis_url, str(self._pid(self.redis_run, "redis") or "-"), _health(redis_ok))
        Console().print(table)
        return kafka_ok and redis_ok


def debian_tool(binary: str, package: str) -> str:
    """Path of `binary`, installing Debian's `package` with apt-get when it is missing and we are root."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"`{binary}` is not installed: install it (Debian/Ubuntu: sudo apt-get install {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt-get (a browser install, say) may hold the lock
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", *wait, "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ServiceError(f"apt-get install {package} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    found = shutil.which(binary)
    if not found:
        raise ServiceError(f"`{binary}` is still missing after apt-get install {package}")
    return found


def _health(ok: bool) -> str:
    return "[green]up[/green]" if ok else "[red]down[/red]"


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[streamwarden dev] {message}", flush=True)
