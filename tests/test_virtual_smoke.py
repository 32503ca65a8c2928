from __future__ import annotations

from dbc_harness.drivers.xhci.trb import CompletionCode, TRBType
from dbc_harness.fixtures.virtual import DbcPortState, VirtualXhci

from tests.virtual_helpers import MinimalDbcProducer


def test_bring_up_and_echo() -> None:
    with VirtualXhci() as x:
        b = MinimalDbcProducer(x)
        b.bring_up()
        assert x.state is DbcPortState.CONFIGURED
        assert x.host.device is not None
        assert x.host.device.product == "Linux USB Debug Target"
        ev = b.events()
        assert [e.trb_type for e in ev].count(TRBType.PortStatusChangeEvent) >= 1
        b.queue_out(b"hi")
        b.ring_doorbell(0)
        assert x.host.recv(64, timeout=0.1) == b"hi"
        te = b.transfer_events()
        assert len(te) == 1
        assert te[0].fields["completion_code"] == CompletionCode.Success
        b.post_in(1024)
        b.ring_doorbell(1)
        assert x.host.send(b"hello", timeout=0.1) == 5
        x.advance(10)
        te = b.transfer_events()
        assert te[0].fields["completion_code"] == CompletionCode.ShortPacket
        assert te[0].fields["trb_transfer_length"] == 1024 - 5
        assert b.in_data(5) == b"hello"
        assert x.findings == []
