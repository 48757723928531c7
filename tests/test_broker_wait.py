"""How a starting worker waits for its broker: any bootstrap address accepting a connection will do."""

import socket

import pytest

from streams.admin import BrokerUnreachable, wait_for_broker


@pytest.fixture
def ipv6_listener():
    try:
        server = socket.socket(socket.AF_INET6)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_an_ipv6_literal_in_brackets_is_reached(ipv6_listener):
    wait_for_broker(f"[::1]:{ipv6_listener}", wait_s=0)


def test_the_second_bootstrap_address_is_tried_when_the_first_is_down(ipv6_listener):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    wait_for_broker(f"127.0.0.1:{port}, [::1]:{ipv6_listener}", wait_s=0)


def test_no_answer_within_the_wait_names_the_bootstrap():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"):
        wait_for_broker(f"127.0.0.1:{port}", wait_s=0)
