"""Line-protocol codec: the byte-exact examples of ccbackend.md §8.3, escaping, cc-backend's
decoder rules (whole message rejected on a syntax error), and an encode -> decode round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccsa.ccbackend.models import Resource, StartJob, StopJob
from ccsa.natsbus.lineproto import (
    LineProtocolError,
    decode,
    encode_event,
    encode_start,
    encode_stop,
)

# The oracle: copied verbatim from shared docs/ccbackend.md §8.3 ("Exact examples").
DOC_START_LINE = (
    rb'job,function=start_job,hostname=slurmctl01,type=node,type-id=0 event="{\"cluster\":'
    rb"\"fritz\",\"subCluster\":\"\",\"partition\":\"singlenode\",\"project\":\"proj1\",\"user\":\"alice\","
    rb"\"shared\":\"none\",\"jobState\":\"\",\"resources\":[{\"hostname\":\"f0101\",\"hwthreads\":"
    rb"[0,1,2,3],\"accelerators\":[\"00000000:01:00.0\"]}],\"energyFootprint\":null,\"footprint\":"
    rb"null,\"metaData\":{\"jobName\":\"sim\",\"jobScript\":\"#!/bin/bash\\nsrun ./a.out\\n\","
    rb"\"slurmInfo\":\"JobId=4242 JobName=sim\",\"submitTime\":\"1700000000\"},\"concurrentJobs\":"
    rb"{\"items\":null,\"count\":0},\"energy\":0,\"walltime\":3600,\"jobId\":4242,\"duration\":0,"
    rb'\"numAcc\":1,\"numHwthreads\":4,\"numNodes\":1,\"statistics\":null,\"startTime\":1700000100}"'
    rb" 1700000100000000000" + b"\n"
)
DOC_STOP_LINE = (
    rb"job,function=stop_job,hostname=slurmctl01,partition=singlenode,type=node,type-id=0 "
    rb'event="{\"jobId\":4242,\"cluster\":\"fritz\",\"jobState\":\"completed\",'
    rb'\"stopTime\":1700003700}" 1700003700000000000' + b"\n"
)
# The start JSON of the example, unescaped by hand (the JSON text inside the quotes).
DOC_START_JSON = (
    '{"cluster":"fritz","subCluster":"","partition":"singlenode","project":"proj1","user":"alice",'
    '"shared":"none","jobState":"","resources":[{"hostname":"f0101","hwthreads":[0,1,2,3],'
    '"accelerators":["00000000:01:00.0"]}],"energyFootprint":null,"footprint":null,"metaData":'
    '{"jobName":"sim","jobScript":"#!/bin/bash\\nsrun ./a.out\\n","slurmInfo":"JobId=4242 '
    'JobName=sim","submitTime":"1700000000"},"concurrentJobs":{"items":null,"count":0},"energy":0,'
    '"walltime":3600,"jobId":4242,"duration":0,"numAcc":1,"numHwthreads":4,"numNodes":1,'
    '"statistics":null,"startTime":1700000100}'
)
DOC_STOP_JSON = '{"jobId":4242,"cluster":"fritz","jobState":"completed","stopTime":1700003700}'


def test_doc_start_example_byte_for_byte() -> None:
    line = encode_event(
        "start_job",
        DOC_START_JSON.encode(),
        hostname="slurmctl01",
        timestamp_ns=1700000100000000000,
    )
    assert line == DOC_START_LINE


def test_doc_stop_example_byte_for_byte_from_struct() -> None:
    body = StopJob(job_id=4242, cluster="fritz", job_state="completed", stop_time=1700003700)
    assert encode_stop(body, hostname="slurmctl01", partition="singlenode") == DOC_STOP_LINE


def test_doc_stop_example_from_text() -> None:
    line = encode_event(
        "stop_job",
        DOC_STOP_JSON,
        hostname="slurmctl01",
        timestamp_ns=1700003700000000000,
        partition="singlenode",
    )
    assert line == DOC_STOP_LINE


def test_doc_examples_decode_to_their_json() -> None:
    events = decode(DOC_START_LINE + DOC_STOP_LINE)
    assert [e.function for e in events] == ["start_job", "stop_job"]
    assert events[0].event == DOC_START_JSON
    assert events[1].event == DOC_STOP_JSON
    assert events[0].timestamp_ns == 1700000100000000000
    assert events[1].tags == {
        "function": "stop_job",
        "hostname": "slurmctl01",
        "partition": "singlenode",
        "type": "node",
        "type-id": "0",
    }
    assert json.loads(events[0].raw)["metaData"]["jobScript"] == "#!/bin/bash\nsrun ./a.out\n"


def test_encode_start_uses_struct_json_and_start_time() -> None:
    body = StartJob(
        job_id=7,
        cluster="c",
        user="u",
        project="p",
        num_nodes=1,
        resources=[Resource(hostname="n1")],
        start_time=1234,
        shared="none",
        meta_data={"jobScript": '#!/bin/sh\necho "hi" \\o/\n'},
    )
    line = encode_start(body, hostname="ctl")
    assert line.startswith(b"job,function=start_job,hostname=ctl,type=node,type-id=0 event=")
    assert line.endswith(b'" 1234000000000\n')
    # msgspec writes the newline as \n and the quote as \" in JSON; the field escaping then
    # doubles every backslash and escapes every quote.
    assert rb"\"jobScript\":\"#!/bin/sh\\necho \\\"hi\\\" \\\\o/\\n\"" in line
    (event,) = decode(line)
    assert json.loads(event.event)["metaData"]["jobScript"] == '#!/bin/sh\necho "hi" \\o/\n'


def test_empty_partition_and_hostname_are_left_out() -> None:
    line = encode_event("stop_job", "{}", hostname="", timestamp_ns=5, partition="")
    assert line == b'job,function=stop_job,type=node,type-id=0 event="{}" 5\n'
    assert decode(line)[0].tags == {"function": "stop_job", "type": "node", "type-id": "0"}


def test_tag_value_escaping() -> None:
    line = encode_event(
        "stop_job", "{}", hostname="a b,c=d", timestamp_ns=1, partition="x\ny\tz\rw\\v"
    )
    assert line == (
        b"job,function=stop_job,hostname=a\\ b\\,c\\=d,partition=x\\\\ny\\\\tz\\\\rw\\v,"
        b'type=node,type-id=0 event="{}" 1\n'
    )
    tags = decode(line)[0].tags
    assert tags["hostname"] == "a b,c=d"
    # The encoder quirk is not reversible: the decoder keeps the backslashes literally.
    assert tags["partition"] == "x\\\\ny\\\\tz\\\\rw\\v"


def test_string_field_escapes_only_quote_and_backslash() -> None:
    line = encode_event("start_job", 'a"b\\c\nd, e=f', hostname="h", timestamp_ns=9)
    assert (
        line
        == b'job,function=start_job,hostname=h,type=node,type-id=0 event="a\\"b\\\\c\nd, e=f" 9\n'
    )
    assert decode(line)[0].event == 'a"b\\c\nd, e=f'


def test_unknown_function_is_refused_by_encoder() -> None:
    with pytest.raises(ValueError, match="start_job or stop_job"):
        encode_event("node_state", "{}", hostname="h", timestamp_ns=1)  # type: ignore[arg-type]


GOOD = b'job,function=start_job event="{}" 1\n'


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b'job,function=start_job,partition= event="{}" 1\n', "expected tag value"),
        (b'job,function=stop_job,hostname= event="{}" 2\n', "line 2: expected tag value"),
        (b'job,function=start_job event="{}"\n', "missing timestamp"),
        (b'job,function=start_job event="{}" 0\n', "cannot be zero"),
        (b'job,function=start_job event="a\\xb" 1\n', "invalid escape"),
        (b"job,function=start_job 1\n", "missing field|expected '='"),
        (b"job,function=start_job\n", "missing field"),
        (b'job,function=start_job event="{} 1\n', "unterminated string"),
        (b'job,function=start_job event="{}" 12x\n', "invalid timestamp"),
        (b'job,function=start_job event="{}" 1 extra\n', "after timestamp"),
        (b"job,function=start_job event=abc 1\n", "invalid value"),
        (b',function=start_job event="{}" 1\n', "empty measurement"),
        (b'job,=x event="{}" 1\n', "expected tag key"),
        (b"job,function=start_job\\", "invalid escape"),
        (b'job,function=start_job event="\xff" 1\n', "not UTF-8"),
    ],
)
def test_rejects_whole_message(message: bytes, match: str) -> None:
    with pytest.raises(LineProtocolError, match=match):
        decode(GOOD + message)  # the good first line is dropped too


def test_skips_what_cc_backend_skips() -> None:
    message = (
        b'cpu,function=start_job event="{}" 1\n'
        b"job,function=start_job value=1i 2\n"
        b"job,function=start_job event=1.5 3\n"
        b'job,function=node_state event="{}" 4\n'
        b'job,hostname=h event="{}" 5\n'
        b"\n# a comment\n   \n"
        b'job,function=stop_job ok=t,event="{\\"jobId\\":1}",n=-3i,u=4u 6\n'
    )
    skipped: list[str] = []
    events = decode(message, skipped)
    assert [(e.function, e.event, e.timestamp_ns) for e in events] == [
        ("stop_job", '{"jobId":1}', 6)
    ]
    assert len(skipped) == 5
    assert "measurement 'cpu'" in skipped[0]
    assert "line 4:" in skipped[3]
    assert "unknown function 'node_state'" in skipped[3]


def test_no_trailing_newline() -> None:
    events = decode(b'job,function=start_job event="a" 1\njob,function=stop_job event="b" 2')
    assert [e.event for e in events] == ["a", "b"]


def test_tag_keys_and_measurement_unescape() -> None:
    (event,) = decode(b'job,fun\\=ction=x,function=start_job,my\\ key=a\\,b event="{}" 7\n')
    assert event.tags == {"fun=ction": "x", "function": "start_job", "my key": "a,b"}


_tag_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\n\r\t\\"), max_size=20
)


@given(
    function=st.sampled_from(["start_job", "stop_job"]),
    event=st.text(st.characters(exclude_categories=["Cs"]), max_size=200),
    hostname=_tag_text,
    partition=st.none() | _tag_text,
    timestamp_ns=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_round_trip(
    function: str, event: str, hostname: str, partition: str | None, timestamp_ns: int
) -> None:
    line = encode_event(
        function,  # type: ignore[arg-type]
        event,
        hostname=hostname,
        timestamp_ns=timestamp_ns,
        partition=partition,
    )
    (decoded,) = decode(line)
    assert decoded.function == function
    assert decoded.event == event
    assert decoded.timestamp_ns == timestamp_ns
    expected = {"function": function, "type": "node", "type-id": "0"}
    if hostname:
        expected["hostname"] = hostname
    if partition:
        expected["partition"] = partition
    assert decoded.tags == expected
    # Two messages concatenated decode to two events: lines split only outside strings.
    assert len(decode(line + line)) == 2
