# SPDX-License-Identifier: Apache-2.0
"""A real PostgreSQL 15 for the integration tests: initdb into a temp dir,
loopback TCP only, scram-sha-256 for the enforcer's user, TLS with a test CA
when asked, the schema of ../shared/cases/sql.txt. Stopped by its PID."""
import os
import signal
import socket
import subprocess
import time

PGBIN = "/usr/lib/postgresql/15/bin"
PSQL = "/usr/bin/psql"

SCHEMA = r"""
CREATE TABLE customers (id int PRIMARY KEY, email text, cc text);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric);
CREATE TABLE secrets (id int PRIMARY KEY, cc text);
INSERT INTO customers VALUES (1, 'alice@example.com', '4111111111111111'),
                             (2, 'bob@example.org', '5500005555555559');
INSERT INTO orders (customer_id, total) SELECT 1 + (g % 2), g FROM generate_series(1, 5) g;
INSERT INTO secrets VALUES (1, '378282246310005');
CREATE FUNCTION harmless_looking() RETURNS int LANGUAGE plpgsql AS
  $$BEGIN DELETE FROM orders WHERE id = 5; RETURN 1; END$$;
CREATE TABLE big AS SELECT g AS id, 'row ' || g AS label,
  CASE WHEN g % 1000 = 0 THEN 'card 4111 1111 1111 1111' ELSE 'plain' END AS note
  FROM generate_series(1, 120000) g;
CREATE TABLE notes (id int, body text);
INSERT INTO notes VALUES (1, 'mail me at carol@example.net please'), (2, 'nothing here');
CREATE ROLE app LOGIN PASSWORD 'app-secret-pw';
CREATE ROLE app_md5 LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO app, app_md5;
GRANT USAGE, UPDATE, SELECT ON ALL SEQUENCES IN SCHEMA public TO app, app_md5;
GRANT EXECUTE ON FUNCTION harmless_looking() TO app;
GRANT pg_read_server_files, pg_write_server_files, pg_execute_server_program TO app;
GRANT pg_signal_backend TO app;
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


_CA_MADE = {}
_CA_FILES = ("ca.key", "ca.crt", "server.key", "server.crt", "other.key", "other.crt")


def make_ca(d, cn="127.0.0.1"):
    """A test CA and a server certificate for cn (an IP SAN and a DNS SAN),
    made once per test run and copied into d (three RSA keys per test took
    about half a second)."""
    import shutil
    if cn not in _CA_MADE:
        import atexit
        import tempfile
        top = tempfile.mkdtemp(prefix="agpg-ca-")
        atexit.register(shutil.rmtree, top, True)
        _make_ca(top, cn)
        _CA_MADE[cn] = top
    for f in _CA_FILES:
        shutil.copy2(os.path.join(_CA_MADE[cn], f), os.path.join(d, f))
    os.chmod(os.path.join(d, "server.key"), 0o600)
    return os.path.join(d, "ca.crt"), os.path.join(d, "other.crt")


def _make_ca(d, cn):
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=agentgate test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={cn}")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName=IP:{cn},DNS:db.test\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    # another CA that signed nothing: verify-full with it must fail
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
        "other.crt", "-days", "2", "-subj", "/CN=some other CA")
    os.chmod(os.path.join(d, "server.key"), 0o600)
    return os.path.join(d, "ca.crt"), os.path.join(d, "other.crt")


_TEMPLATE = None


def _template():
    """One initdb per test run: a stopped cluster with the 'shop' database,
    its schema and roles, which each Postgres() copies (initdb and the schema
    took about 3.5 s per test, a copy takes a tenth of that)."""
    global _TEMPLATE
    if _TEMPLATE:
        return _TEMPLATE
    import atexit
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="agpg-template-")
    atexit.register(shutil.rmtree, top, True)
    os.chmod(top, 0o755)
    data, sock = os.path.join(top, "pgdata"), os.path.join(top, "sock")
    for p in (data, sock):
        os.makedirs(p)
        os.chown(p, pg_uid(), pg_gid())
    # 1 MB WAL segments, few kept: the copy each test makes was half WAL
    # (two 16 MB segments of 68 MB)
    _as_pg([f"{PGBIN}/initdb", "-D", data, "-E", "UTF8", "--locale=C.UTF-8", "-A", "trust", "-U", "postgres",
            "--wal-segsize=1"])
    port = free_port()
    proc = subprocess.Popen(["setpriv", f"--reuid={pg_uid()}", f"--regid={pg_gid()}", "--clear-groups",
                             f"{PGBIN}/postgres", "-D", data, "-p", str(port), "-k", sock,
                             "-c", "listen_addresses=", "-c", "fsync=off", "-c", "min_wal_size=2MB",
                             "-c", "max_wal_size=4MB",
                             "-c", "password_encryption=scram-sha-256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        _wait_up(sock, port, proc)
        _sql(sock, port, "CREATE DATABASE shop", "postgres")
        _sql(sock, port, SCHEMA, "shop")
        _sql(sock, port, "SET password_encryption = 'md5'; ALTER ROLE app_md5 PASSWORD 'md5-secret-pw'", "shop")
        _sql(sock, port, "CHECKPOINT", "shop")   # the WAL written so far is removed, not kept for reuse
    finally:
        proc.send_signal(signal.SIGINT)   # fast shutdown: a clean checkpoint to copy
        proc.wait(30)
    _TEMPLATE = data
    return data


def _as_pg(argv):
    subprocess.run(["setpriv", f"--reuid={pg_uid()}", f"--regid={pg_gid()}", "--clear-groups", *argv],
                   check=True, capture_output=True)


def _sql(sock, port, q, db):
    r = subprocess.run([PSQL, "-h", sock, "-p", str(port), "-U", "postgres", "-d", db,
                        "-v", "ON_ERROR_STOP=1", "-Atq", "-c", q], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"sql {q!r}: {r.stderr}")
    return r.stdout.strip()


def _wait_up(sock, port, proc, log=None):
    end = time.time() + 15
    while time.time() < end:
        r = subprocess.run([PSQL, "-h", sock, "-p", str(port), "-U", "postgres", "-d", "postgres",
                            "-Atc", "SELECT 1"], capture_output=True, text=True)
        if r.returncode == 0:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("postgres did not start:\n" + (open(log).read() if log else r.stderr))


class Postgres:
    def __init__(self, tmp, ssl=False, hba_extra="", standby=False):
        """standby: a hot standby with no primary (standby.signal): in recovery
        for good, read-only, as a replica is."""
        self.dir = os.path.join(tmp, "pgdata")
        self.sock = os.path.join(tmp, "pgsock")
        self.log = os.path.join(tmp, "pg.log")
        self.port = free_port()
        self.ca = self.other_ca = None
        os.makedirs(self.sock, exist_ok=True)
        os.chown(self.sock, pg_uid(), pg_gid())
        subprocess.run(["cp", "-a", _template(), self.dir], check=True)
        conf = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{self.sock}'", "password_encryption = 'scram-sha-256'",
                # a standby needs at least the template's (initdb's default)
                f"max_connections = {100 if standby else 60}", "fsync = off", "synchronous_commit = off"]
        if ssl:
            certdir = os.path.join(tmp, "pgcerts")
            os.makedirs(certdir, exist_ok=True)
            self.ca, self.other_ca = make_ca(certdir)
            # the server reads its own certificate and key; the CA files stay
            # root's, as the enforcer requires of a ca_file it trusts
            for f in ("server.crt", "server.key"):
                os.chown(os.path.join(certdir, f), pg_uid(), pg_gid())
            conf += ["ssl = on", f"ssl_cert_file = '{certdir}/server.crt'",
                     f"ssl_key_file = '{certdir}/server.key'"]
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")
        if standby:
            open(os.path.join(self.dir, "standby.signal"), "w").close()
            os.chown(os.path.join(self.dir, "standby.signal"), pg_uid(), pg_gid())
        with open(os.path.join(self.dir, "pg_hba.conf"), "w") as f:
            f.write("local all postgres trust\n")
            f.write(hba_extra)
            f.write("host all app_md5 127.0.0.1/32 md5\n")
            f.write("host all all 127.0.0.1/32 scram-sha-256\n")
        self.proc = subprocess.Popen(["setpriv", f"--reuid={pg_uid()}", f"--regid={pg_gid()}", "--clear-groups",
                                      f"{PGBIN}/postgres", "-D", self.dir],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        _wait_up(self.sock, self.port, self.proc, self.log)

    def as_pg(self, argv):
        _as_pg(argv)

    def sql(self, q, db="shop"):
        """Runs q as the superuser over the unix socket (never through agentgate)."""
        return _sql(self.sock, self.port, q, db)

    def listen_on(self, addrs):
        """Restarts the server listening on each of addrs (the same port),
        every client address of 127.0.0.0/24 allowed as 127.0.0.1 is."""
        self.stop()
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '%s'\n" % ",".join(addrs))
        with open(os.path.join(self.dir, "pg_hba.conf"), "a") as f:
            f.write("host all all 127.0.0.0/24 scram-sha-256\n")
        self.proc = subprocess.Popen(["setpriv", f"--reuid={pg_uid()}", f"--regid={pg_gid()}", "--clear-groups",
                                      f"{PGBIN}/postgres", "-D", self.dir], stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_up(self.sock, self.port, self.proc, self.log)

    def stop(self, immediate=False):
        """Fast shutdown, or immediate (no checkpoint: for a cluster that
        is thrown away next, about 0.4 s sooner)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pg_uid():
    import pwd
    return pwd.getpwnam("postgres").pw_uid


def pg_gid():
    import pwd
    return pwd.getpwnam("postgres").pw_gid
