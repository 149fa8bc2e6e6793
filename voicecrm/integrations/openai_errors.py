"""What went wrong with an OpenAI-compatible server, in words a person can act on.

The language model and the speech providers talk to the same kind of server
through the same client, so they explain its failures the same way: what the
server said (shortened), a hint for the usual status codes, and never the API
key, which some servers echo back.
"""

from __future__ import annotations

import openai

# The client's stand-in key for servers that need none; it is not a secret.
KEYLESS_PLACEHOLDER = "unused"
MAX_SERVER_MESSAGE = 300
_HINTS = {
    401: " Check the API key.",
    403: " Check the API key's permissions.",
    404: " Check the model name and the base URL (usually ending in /v1).",
    429: " The server is rate limiting or out of quota.",
}


class OpenAIErrorText:
    def __init__(self, api_key: str) -> None:
        self._secret = api_key if api_key != KEYLESS_PLACEHOLDER else ""

    def describe(
        self, err: openai.OpenAIError, where: str, *, reported: str = "reported an error"
    ) -> str:
        """`reported` words an error the server sent inside an answer (mid-stream)."""
        if isinstance(err, openai.APITimeoutError):
            return f"{where} timed out."
        if isinstance(err, openai.APIConnectionError):
            cause = type(err.__cause__).__name__ if err.__cause__ else "connection error"
            return f"{where} could not be reached or dropped the connection ({cause})."
        if isinstance(err, openai.APIStatusError):
            code = f" ({err.code})" if err.code else ""
            return (
                f"{where} refused the request with HTTP {err.status_code}{code}: "
                f"{self.server_said(err)}{_HINTS.get(err.status_code, '')}"
            )
        if isinstance(err, openai.APIError):
            return f"{where} {reported}: {self.server_said(err)}"
        return f"{where} failed: {self.redact(str(err))}"

    def server_said(self, err: openai.APIError) -> str:
        message = err.message
        if isinstance(err.body, dict) and isinstance(err.body.get("message"), str):
            message = err.body["message"]
        message = self.redact(message.strip())
        if len(message) > MAX_SERVER_MESSAGE:
            message = message[:MAX_SERVER_MESSAGE] + "..."
        return message if message.endswith((".", "!", "?", "...")) else message + "."

    def redact(self, text: str) -> str:
        """Servers may echo the key they were sent; it never goes into our messages."""
        return text.replace(self._secret, "[redacted]") if self._secret else text
