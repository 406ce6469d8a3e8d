"""A Python gRPC client of noiseda's Training service (grpcio, stubs generated from proto/).

Usage: train_client.py PROTO_DIR ADDRESS CLEAN_DIR
Submits a tiny job, reads its metric stream to the end, checks the job completed and that
errors come back as gRPC status codes. Prints "ok <points>" on success.
"""
import sys

import grpc

from stubs import generate


def main():
    proto_dir, address, clean = sys.argv[1:4]
    pb, rpc = generate(proto_dir, "training")
    stub = rpc.TrainingStub(grpc.insecure_channel(address))
    spec = f"""
name = "from-python"
steps = 12
[restorer]
arch = "unet"
width = 8
depth = 3
[data]
patch = 32
batch = 2
[data.synthetic]
clean = "{clean}"
degradation = {{ kind = "awgn", sigma = [5, 30] }}
[checkpoint]
every = 6
"""
    req = pb.StartJobRequest(spec=pb.JobSpec(toml=spec), request_id="python-1")
    job = stub.StartJob(req, timeout=30)
    assert stub.StartJob(req, timeout=30).id == job.id, "request id is idempotent"

    points = list(stub.StreamMetrics(pb.StreamMetricsRequest(job_id=job.id), timeout=120))
    seqs = [p.seq for p in points]
    assert seqs == list(range(1, len(points) + 1)), seqs
    assert [p.step for p in points] == list(range(1, 13)), [p.step for p in points]
    assert all(p.split == pb.SPLIT_TRAIN and p.series == "charbonnier" for p in points)

    job = stub.GetJob(pb.GetJobRequest(job_id=job.id), timeout=30)
    assert job.state == pb.JOB_STATE_COMPLETED, (job.state, job.last_error)
    assert job.progress.step == 12

    try:
        stub.GetJob(pb.GetJobRequest(job_id="no-such-job"), timeout=30)
        raise AssertionError("an unknown job must fail")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
    try:
        bad = spec.replace('name = "from-python"', 'name = ""').replace("steps = 12", "steps = 0")
        stub.StartJob(pb.StartJobRequest(spec=pb.JobSpec(toml=bad)), timeout=30)
        raise AssertionError("an invalid spec must fail")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        assert "`steps`" in e.details() and "`name`" in e.details(), e.details()
    print("ok", len(points))


if __name__ == "__main__":
    main()
