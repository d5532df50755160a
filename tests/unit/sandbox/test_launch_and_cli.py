"""The run-dir address record, and the ``sandbox`` CLI's argument handling (no bwrap needed)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from click.testing import CliRunner

from mathfirst_hpc.cli import cli
from mathfirst_hpc.paths import RunPaths
from mathfirst_hpc.sandbox.config import SandboxConfig
from mathfirst_hpc.sandbox.launch import advertised_host, clear_address, find_server, read_address, record_address


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_address_is_recorded_found_while_alive_and_cleared_only_by_its_owner(tmp_path) -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        info = record_address(tmp_path, SandboxConfig(host="127.0.0.1"), httpd.server_port)
        assert read_address(tmp_path) == info and info["pid"] == os.getpid()
        assert json.loads(RunPaths(tmp_path).sandbox_address.read_text())["url"] == info["url"]
        assert find_server(tmp_path) == info["url"]
        clear_address(tmp_path, pid=os.getpid() + 1)  # someone else's record: kept
        assert read_address(tmp_path) is not None
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert find_server(tmp_path, timeout_s=0.5) is None  # recorded but dead
    clear_address(tmp_path, pid=os.getpid())
    assert read_address(tmp_path) is None and find_server(tmp_path) is None


def test_a_server_bound_to_all_interfaces_advertises_the_hostname() -> None:
    assert advertised_host("0.0.0.0") not in ("0.0.0.0", "")
    assert advertised_host("10.1.2.3") == "10.1.2.3"


def test_run_refuses_a_file_of_unknown_language_in_one_line(tmp_path) -> None:
    program = tmp_path / "prog.txt"
    program.write_text("print(1)")
    result = CliRunner().invoke(cli, ["sandbox", "run", str(program)])
    assert result.exit_code == 2
    expected = "error: cannot tell the language of prog.txt (pass --language python|cpp)"
    assert result.output.strip().splitlines() == [expected]


def test_run_refuses_bad_limits_in_one_line(tmp_path) -> None:
    program = tmp_path / "prog.py"
    program.write_text("print(1)")
    result = CliRunner().invoke(cli, ["sandbox", "run", str(program), "--time-limit", "0"])
    assert result.exit_code == 2 and "time_limit_s" in result.output


def test_serve_and_run_options_are_stable() -> None:
    from mathfirst_hpc.cli.sandbox_cmd import run_one, serve

    assert sorted(p.name for p in serve.params) == ["host", "isolation", "port", "queue_max", "run_dir", "workers"]
    assert sorted(p.name for p in run_one.params) == ["file", "isolation", "language", "memory_mb", "stdin_file",
                                                      "time_limit_s"]
