"""Data sets for intrusion and fraud detection: a seeded generator of labelled network-flow records
(normal services and four attacks) and the phishing-website table river ships."""
from __future__ import annotations

import importlib.util
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.errors import DataError

HOUR = 3600.0
WINDOW = 60.0  # seconds of recent flows summarised in the per-source and per-destination columns
CLIENTS = 400  # internal hosts making the normal traffic
ATTACKS = {"port_scan": 0.35, "syn_flood": 0.30, "brute_force": 0.20, "exfiltration": 0.15}  # share of attack rows
CAMPAIGN = {"port_scan": 150, "syn_flood": 200, "brute_force": 60, "exfiltration": 6}  # most flows per campaign
# per normal service: share of sessions, protocol, ports, flows per session (mean), duration s (median, spread),
# bytes sent (median, spread), bytes received (median, spread), bytes per packet, servers
SERVICES = {
    "web": (0.49, "tcp", (443, 443, 443, 80), 6.0, (2.0, 1.2), (900, 1.2), (40_000, 1.5), 900, 200),
    "dns": (0.28, "udp", (53,), 1.5, (0.03, 0.6), (70, 0.2), (180, 0.4), 120, 2),
    "mail": (0.09, "tcp", (25, 587, 993), 1.2, (1.5, 0.8), (12_000, 1.2), (3_000, 1.0), 700, 3),
    "ssh": (0.04, "tcp", (22,), 1.0, (120.0, 1.5), (8_000, 1.5), (30_000, 1.5), 200, 20),
    "ntp": (0.08, "udp", (123,), 1.0, (0.02, 0.3), (90, 0.05), (90, 0.05), 90, 2),
    "upload": (0.02, "tcp", (443,), 1.0, (60.0, 1.0), (4_000_000, 1.2), (20_000, 1.0), 1400, 5),  # cloud backups
}
FAILED_SHARE = 0.03  # normal TCP flows that never connect: half reset, half unanswered SYNs (1 to 3 tries)
PHISHING_INSTALL = "pip install --no-deps river==0.26.1"


def _host(number: int) -> str:
    return f"10.0.{number // 250}.{number % 250 + 1}"


def _server(service: str, number: int) -> str:
    return f"172.16.{list(SERVICES).index(service)}.{number + 1}"


def _normal(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Sessions of the normal services from the client hosts (a web page load is a burst of flows),
    cut to `rows` flows."""
    names = list(SERVICES)
    shares = np.array([SERVICES[name][0] for name in names])
    service = rng.choice(len(names), rows, p=shares / shares.sum())  # more sessions than needed
    count = 1 + rng.poisson(np.array([SERVICES[name][3] for name in names])[service] - 1)
    sessions = int(np.searchsorted(np.cumsum(count), rows)) + 1
    service, count = service[:sessions], count[:sessions]
    session = np.repeat(np.arange(sessions), count)  # (flows,)
    gaps = rng.exponential(2.0, len(session))
    within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(count) - count], count)  # restarts per session
    times = rng.uniform(0, HOUR, sessions)[session] + within
    hosts = rng.integers(0, CLIENTS, sessions)[session]
    servers = np.empty(sessions, dtype=object)
    for position, name in enumerate(names):  # a few popular servers take most sessions (Zipf)
        chosen = np.flatnonzero(service == position)
        popularity = 1.0 / np.arange(1, SERVICES[name][8] + 1) ** 1.1
        servers[chosen] = [_server(name, number) for number in
                           rng.choice(len(popularity), len(chosen), p=popularity / popularity.sum())]
    parts = []
    for position, name in enumerate(names):
        flows = np.flatnonzero(service[session] == position)
        if len(flows):
            parts.append(_flows(rng, len(flows), SERVICES[name]).set_axis(flows))
    frame = pd.concat(parts).sort_index()
    frame.insert(0, "time", times)
    frame.insert(1, "source", [_host(host) for host in hosts])
    frame.insert(2, "destination", servers[session])
    return frame.iloc[:rows].assign(label="normal")


def _unanswered(rng: np.random.Generator, count: int) -> dict:
    """SYNs that nobody answers, retried up to twice (after 1 s, then 2 s more)."""
    tries = rng.choice([1, 2, 3], count, p=[0.5, 0.3, 0.2])
    zeros = np.zeros(count)
    return dict(duration=np.array([0.0, 1.0, 3.0])[tries - 1] + rng.exponential(0.01, count),
                bytes_sent=60.0 * tries, bytes_received=zeros, packets_sent=tries.astype(float),
                packets_received=zeros, syn_count=tries.astype(float), ack_count=zeros, fin_count=zeros,
                rst_count=zeros)


def _reset(rng: np.random.Generator, count: int) -> dict:
    """A SYN that a closed port answers with RST."""
    zeros, ones = np.zeros(count), np.ones(count)
    return dict(duration=rng.exponential(0.002, count), bytes_sent=60 * ones, bytes_received=40 * ones,
                packets_sent=ones, packets_received=ones, syn_count=ones, ack_count=zeros, fin_count=zeros,
                rst_count=ones)


def _flows(rng: np.random.Generator, count: int, service: tuple) -> pd.DataFrame:
    """Ordinary flows of one service: log-normal durations and sizes, packets from the sizes, a full
    TCP handshake and close; a few TCP flows fail to connect."""
    _, protocol, ports, _, duration, sent, received, packet, _ = service
    up = np.maximum(1, sent[0] * rng.lognormal(0, sent[1], count)).round()
    down = np.maximum(0, received[0] * rng.lognormal(0, received[1], count)).round()
    tcp = int(protocol == "tcp")
    packets_up = np.maximum(1, np.ceil(up / packet) + tcp * 2)
    packets_down = np.maximum(1, np.ceil(down / packet) + tcp)
    frame = pd.DataFrame({
        "protocol": protocol, "destination_port": rng.choice(ports, count),
        "duration": duration[0] * rng.lognormal(0, duration[1], count), "bytes_sent": up, "bytes_received": down,
        "packets_sent": packets_up, "packets_received": packets_down,
        "syn_count": np.full(count, tcp), "ack_count": (packets_up + packets_down - 1) * tcp,
        "fin_count": tcp * (1 + rng.integers(0, 2, count)), "rst_count": tcp * (rng.random(count) < 0.02)})
    failed = np.flatnonzero(tcp * (rng.random(count) < FAILED_SHARE))
    for rows, make in ((failed[::2], _reset), (failed[1::2], _unanswered)):
        for column, values in make(rng, len(rows)).items():
            frame.loc[rows, column] = values
    return frame


def _attack(rng: np.random.Generator, attack: str, count: int) -> pd.DataFrame:
    """One campaign of `count` flows of an attack."""
    start = rng.uniform(0, HOUR - 120)
    attacker = f"203.0.113.{rng.integers(1, 255)}"
    ones = np.ones(count)
    if attack == "port_scan":  # SYNs to many ports of one server, closed ones answer RST; half scan slowly
        span = rng.choice([20 + count / 10, rng.uniform(600, 1200)])
        times, source, destination = start + np.sort(rng.uniform(0, span, count)), attacker, _server("web", 0)
        ports = rng.choice(np.arange(1, 10_000), count, replace=False)
        frame = _reset(rng, count)
        answered = rng.random(count) < 0.1  # open ports complete the handshake, then the scanner resets
        frame["packets_sent"] = frame["packets_sent"] + answered
        frame["ack_count"] = answered * 1.0
    elif attack == "syn_flood":  # unanswered SYNs from spoofed addresses to one web server: each looks ordinary
        times = start + np.sort(rng.uniform(0, rng.uniform(40, 120), count))
        source = [f"198.51.{rng.integers(0, 256)}.{rng.integers(1, 255)}" for _ in range(count)]
        destination, ports = _server("web", int(rng.integers(0, 5))), np.full(count, 443)
        frame = _unanswered(rng, count)
    elif attack == "brute_force":  # one source, many short failed logins to an SSH server
        times, source, destination = start + np.cumsum(rng.exponential(1.5, count)), attacker, _server("ssh", 0)
        ports = np.full(count, 22)
        packets = rng.integers(10, 18, count).astype(float)
        frame = dict(duration=rng.uniform(0.8, 3.0, count), bytes_sent=rng.normal(1500, 150, count).round(),
                     bytes_received=rng.normal(2600, 200, count).round(), packets_sent=packets,
                     packets_received=packets - 1, syn_count=ones, ack_count=2 * packets - 2, fin_count=ones,
                     rst_count=(rng.random(count) < 0.3).astype(float))
    else:  # exfiltration: an internal host uploads far more than it downloads to a new outside host
        times = start + np.cumsum(rng.exponential(20.0, count))
        source, destination = _host(int(rng.integers(0, CLIENTS))), f"198.18.{rng.integers(0, 256)}.7"
        ports = rng.choice([443, 443, 8443, 4444], count)
        sent = rng.lognormal(np.log(rng.choice([3e6, 30e6])), 1.0, count).round()
        frame = dict(duration=rng.lognormal(np.log(120), 1.0, count), bytes_sent=sent,
                     bytes_received=(sent * 0.005).round(), packets_sent=np.ceil(sent / 1400) + 2,
                     packets_received=np.ceil(sent * 0.005 / 60) + 1, syn_count=ones,
                     ack_count=np.ceil(sent / 1400) + np.ceil(sent * 0.005 / 60) + 2, fin_count=ones,
                     rst_count=np.zeros(count))
    return pd.DataFrame({"time": times, "source": source, "destination": destination, "protocol": "tcp",
                         "destination_port": ports, **frame, "label": attack})


def _recent(frame: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group of `keys`, over its flows of the last WINDOW seconds (this one included): how many,
    to how many distinct destination ports, and the bytes sent."""
    times, ports, sizes = (frame[name].to_numpy() for name in ("time", "destination_port", "bytes_sent"))
    flows, distinct, sent = (np.zeros(len(frame), dtype=np.int64) for _ in range(3))
    for positions in frame.groupby(keys, sort=False).indices.values():
        recent: deque = deque()
        seen: Counter = Counter()
        total = 0
        for position in positions:  # rows are in time order
            while recent and times[recent[0]] < times[position] - WINDOW:
                gone = recent.popleft()
                seen[ports[gone]] -= 1
                if not seen[ports[gone]]:
                    del seen[ports[gone]]
                total -= sizes[gone]
            recent.append(position)
            seen[ports[position]] += 1
            total += sizes[position]
            flows[position], distinct[position], sent[position] = len(recent), len(seen), total
    return flows, distinct, sent


def network_flows(rows: int = 30_000, attack_share: float = 0.04, seed: int = 0) -> pd.DataFrame:
    """Labelled network-flow records over one hour, in time order: normal web, DNS, mail, SSH, NTP and
    cloud-backup traffic of 400 client hosts and campaigns of port scans, SYN floods, brute-force logins and
    exfiltration (`attack_share` of the rows, split as in ATTACKS). The same seed gives the same rows."""
    if rows < 100 or not 0.0 <= attack_share < 0.5:
        raise DataError(f"network_flows needs rows >= 100 and 0 <= attack_share < 0.5; got rows={rows}, "
                        f"attack_share={attack_share}")
    rng = np.random.default_rng(seed)
    parts = []
    for attack, share in ATTACKS.items():
        wanted, made = round(rows * attack_share * share), 0
        while made < wanted:
            size = min(wanted - made, CAMPAIGN[attack])
            parts.append(_attack(rng, attack, size))
            made += size
    attacks = sum(len(part) for part in parts)
    frame = pd.concat([_normal(rng, rows - attacks), *parts], ignore_index=True)
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    frame[["bytes_sent", "destination_port"]] = frame[["bytes_sent", "destination_port"]].astype(np.int64)
    flows, ports, sent = _recent(frame, ["source"])
    frame = frame.assign(source_flows_60s=flows, source_ports_60s=ports, source_bytes_sent_60s=sent,
                         destination_flows_60s=_recent(frame, ["destination", "destination_port"])[0])
    duration = np.maximum(frame["duration"], 1e-3)
    frame["bytes_per_second"] = (frame["bytes_sent"] + frame["bytes_received"]) / duration
    frame["packets_per_second"] = (frame["packets_sent"] + frame["packets_received"]) / duration
    frame["time"] = frame["time"].round(3)
    frame["duration"] = frame["duration"].round(4)
    counts = ["bytes_sent", "bytes_received", "packets_sent", "packets_received", "syn_count", "ack_count",
              "fin_count", "rst_count", "destination_port"]
    frame[counts] = frame[counts].astype(np.int64)
    label = frame.pop("label")
    return frame.assign(label=label)


def phishing_file() -> Path | None:
    """river's copy of the phishing-website table, found without importing river."""
    spec = importlib.util.find_spec("river")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "phishing.csv.gz"
    return path if path.is_file() else None


def phishing() -> pd.DataFrame:
    """1,250 websites, 9 page and URL features scaled to 0..1 and is_phishing (1 for phishing)."""
    path = phishing_file()
    if path is None:
        raise DataError(f"the phishing data set is read from the river package's copy, which is not installed; "
                        f"install it with: {PHISHING_INSTALL}")
    return pd.read_csv(path)
