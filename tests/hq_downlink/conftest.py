from tests.hq_downlink.helpers import hq_db  # noqa: F401
