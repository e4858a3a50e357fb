"""A port is shared only between the SMTP processes of one gateway (``[smtp] processes``).

With SO_REUSEPORT on every listener, a second gateway started by mistake on the same port
(same Unix user: a test harness, an operator's second home) bound it without an error and
the kernel split the incoming connections between the two: part of the mail went to the
other home. One process must keep the port to itself; several processes of one gateway
share it.
"""

from __future__ import annotations

import asyncio
import errno

from caducee.gateway.smtp.listener import OperatorListener
from tests.harness.served import ServedGateway

from .in_process import InProcessOperators


def _second_listener_on(operators: InProcessOperators, processes: int) -> OSError | None:
    """Start another operators' listener on the same port; the error it met, if any."""
    settings = operators.context.settings
    smtp = settings.smtp.model_copy(update={"processes": processes})
    operators.context.settings = settings.model_copy(update={"smtp": smtp})
    second = OperatorListener(operators.context, "127.0.0.1", operators.port)

    async def attempt() -> OSError | None:
        try:
            await second.start()
        except OSError as error:
            return error
        await second.stop(1)
        return None

    return asyncio.run_coroutine_threadsafe(attempt(), operators.loop).result(30)


def test_k2_a_second_gateway_cannot_take_a_port_in_use(operators: InProcessOperators) -> None:
    """One SMTP process (the default): a second listener on the port fails to start."""
    assert operators.context.settings.smtp.processes == 1
    error = _second_listener_on(operators, processes=1)
    assert error is not None, "a second listener bound a port already in use"
    assert error.errno == errno.EADDRINUSE


def test_k2_the_smtp_processes_of_one_gateway_share_the_port(gateway: ServedGateway) -> None:
    """``[smtp] processes`` above 1: each process's listener binds the same port."""
    served = InProcessOperators(gateway)
    smtp = served.context.settings.smtp.model_copy(update={"processes": 2})
    served.context.settings = served.context.settings.model_copy(update={"smtp": smtp})
    served.start()
    try:
        assert _second_listener_on(served, processes=2) is None
    finally:
        served.close()
