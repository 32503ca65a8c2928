"""Random host/software actions against the 7.6.6 state machine: the registers always agree with
the state, nothing raises, and a configured DbC always moves data."""

from __future__ import annotations

from typing import Literal

from dbc_harness.drivers.xhci.registers import DCCTRL, DCPORTSC
from dbc_harness.fixtures.virtual import DbcPortState, DebugHostError, PortLinkState, VirtualXhci
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.virtual_helpers import MinimalDbcProducer

LINK_UP = {DbcPortState.ENABLED, DbcPortState.CONFIGURED}


class PortMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.x = VirtualXhci(strict=False)
        self.b = MinimalDbcProducer(self.x)
        self.b.program()
        self.b.enable()

    @rule(us=st.sampled_from([100, 2_000, 10_000, 50_000]))
    def time_passes(self, us: int) -> None:
        self.x.advance(us)

    @rule()
    def unplug(self) -> None:
        self.x.host.unplug()

    @rule()
    def plug(self) -> None:
        self.x.host.plug()

    @rule(kind=st.sampled_from(["hot", "warm"]))
    def host_reset(self, kind: Literal["hot", "warm"]) -> None:
        try:
            self.x.host.reset(kind)
        except DebugHostError:
            assert self.x.state not in LINK_UP | {DbcPortState.RESETTING, DbcPortState.ERROR}

    @rule(kind=st.sampled_from(["inactive", "config"]))
    def link_error(self, kind: Literal["inactive", "config"]) -> None:
        try:
            self.x.host.link_error(kind)
        except DebugHostError:
            pass

    @rule(value=st.sampled_from([0, 1]))
    def set_configuration(self, value: int) -> None:
        try:
            self.x.host.set_configuration(value)
        except DebugHostError:
            pass

    @rule()
    def ack(self) -> None:
        self.b.ack()

    @rule()
    def software_disable_port(self) -> None:
        self.b.write("DCPORTSC", DCPORTSC.replace(self.b.read("DCPORTSC"), PED=0))

    @rule()
    def software_enable_port(self) -> None:
        self.b.write("DCPORTSC", DCPORTSC.replace(self.b.read("DCPORTSC"), PED=1))

    @rule(dce=st.sampled_from([0, 1]))
    def toggle_dce(self, dce: int) -> None:
        self.b.write("DCCTRL", DCCTRL.encode(DCE=dce, LSE=1))

    @invariant()
    def registers_agree_with_state(self) -> None:
        b, state = self.b, self.x.state
        ctrl, port, dcst = b.dcctrl(), b.portsc(), b.dcst()
        assert ctrl["DCE"] == int(state is not DbcPortState.OFF)
        assert ctrl["DCR"] == int(state is DbcPortState.CONFIGURED)
        assert (dcst["debug_port_number"] != 0) == (state is DbcPortState.CONFIGURED)
        assert (ctrl["device_address"] != 0) == (state is DbcPortState.CONFIGURED)
        if state in LINK_UP:
            assert (port["CCS"], port["PED"], port["PLS"]) == (1, 1, PortLinkState.U0)
            assert port["port_speed"] == 4
        if state is DbcPortState.RESETTING:
            assert port["PR"] == 1 and port["PED"] == 0
        if state is DbcPortState.ERROR:
            assert port["PLS"] == PortLinkState.Inactive and port["PED"] == 0
        if state in (DbcPortState.DISCONNECTED, DbcPortState.DISABLED, DbcPortState.OFF):
            assert port["CCS"] == 0 and port["PED"] == 0
        assert self.x.host.configured == (state is DbcPortState.CONFIGURED and self.x.host.plugged)
        assert self.x.findings == []

    def teardown(self) -> None:
        self.x.close()


TestPortMachine = PortMachine.TestCase
TestPortMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
