"""Local stand-ins for the chat platforms, for tests and demos: they check payloads the way the platforms do.

One aiohttp server answers, with each platform's documented success and error shapes:
- Slack incoming webhook `POST /slack/<path>`: `text` + Block Kit `blocks`; `ok` or 400 `invalid_blocks`.
- MS Teams incoming webhook `POST /teams/<path>`: a `message` with an Adaptive Card attachment; `1` or 400.
- Telegram Bot API `POST /telegram/bot<token>/sendMessage`: `{ok: true, result: Message}` or
  `{ok: false, error_code, description}` (401 for a wrong token).
- WhatsApp Cloud API `POST /whatsapp/<version>/<phone_number_id>/messages` (Bearer token): a template
  message; `{messaging_product, contacts, messages}` or a Graph `{error: {message, type, code}}`.
- Generic webhook `POST /hooks/<name>`: checks the Standard Webhooks signature
  (`webhook-id`, `webhook-timestamp`, `webhook-signature`) when a secret is registered for `name`.

Accepted payloads are kept in `received`, refused ones in `rejected` (with the reasons); `fail_next` scripts
error statuses to exercise retries. `python -m leaky_devinfra.fakes.chat --port 8090` runs it on its own.
"""

from leaky_devinfra.fakes.chat.payloads import (
    slack_problems,
    teams_problems,
    telegram_problems,
    whatsapp_problems,
)
from leaky_devinfra.fakes.chat.server import FakeChannels, Received

__all__ = [
    "FakeChannels",
    "Received",
    "slack_problems",
    "teams_problems",
    "telegram_problems",
    "whatsapp_problems",
]
