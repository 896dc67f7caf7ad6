"""Lark webhook receiver built on the official Python SDK (lark-oapi), for bench/run.sh.

A Flask app: EventDispatcherHandler with the Encrypt Key and Verification Token, the SDK's typed
handler for hire.referral_account.assets_update_v1 (it does nothing), and the SDK's Flask adapter
(lark_oapi.adapter.flask). The SDK decrypts, checks the token and the signature, and answers
{"msg":"success"} (500 on any failure).

Env: KEY, TOKEN, PATH_ (default /webhook/event). Serve with gunicorn, e.g.
    gunicorn -w 2 -b 127.0.0.1:7806 --chdir bench/receivers/python app:app
"""

import os

import lark_oapi as lark
from flask import Flask
from lark_oapi.adapter.flask import parse_req, parse_resp
from lark_oapi.api.hire.v1 import P2HireReferralAccountAssetsUpdateV1


def on_assets_update(_event: P2HireReferralAccountAssetsUpdateV1) -> None:
    pass


handler = (
    lark.EventDispatcherHandler.builder(
        os.environ.get("KEY", ""), os.environ.get("TOKEN", ""), lark.LogLevel.ERROR
    )
    .register_p2_hire_referral_account_assets_update_v1(on_assets_update)
    .build()
)

app = Flask(__name__)


@app.route(os.environ.get("PATH_", "/webhook/event"), methods=["POST"])
def event():
    return parse_resp(handler.do(parse_req()))
