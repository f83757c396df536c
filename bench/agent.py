"""A throwaway Consul -dev agent on free loopback ports, for the benchmark scripts."""
import socket, subprocess, time, urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_agent(consul, name):
    """Start `consul agent -dev` as node NAME-PORT; returns (process, http port) once it has a leader."""
    http = free_port()
    args = [consul, "agent", "-dev", "-node", f"{name}-{http}", "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", str(http), "-server-port", str(free_port()), "-serf-lan-port", str(free_port()),
            "-serf-wan-port", "-1", "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-https-port", "-1"]
    agent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if len(urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/status/leader").read()) > 4:
                return agent, http
        except OSError:
            pass
        time.sleep(0.1)
    agent.kill()
    raise SystemExit("consul agent did not start")
