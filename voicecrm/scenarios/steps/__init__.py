"""Step handlers, one per step kind; each returns where the call goes next."""

from __future__ import annotations

from typing import Any

from voicecrm.scenarios.steps import agent, connect, crm, flow, speech

HANDLERS: dict[str, Any] = {
    "say": speech.say,
    "play": speech.play,
    "gather": speech.gather,
    "echo": speech.echo,
    "branch": flow.branch,
    "set": flow.set_variables,
    "goto": flow.goto,
    "hangup": flow.hangup,
    "create_crm_note": crm.create_crm_note,
    "set_stage": crm.set_stage,
    "set_status": crm.set_status,
    "add_tag": crm.add_tag,
    "remove_tag": crm.remove_tag,
    "update_contact": crm.update_contact,
    "create_task": crm.create_task,
    "http_request": connect.http_request,
    "transfer": connect.transfer,
    "voicemail": connect.voicemail,
    "agent": agent.agent,
}
