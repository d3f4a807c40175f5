"""The API's routes: one ``APIRouter`` per module, each importing ``deps`` and ``problems``, never another."""
