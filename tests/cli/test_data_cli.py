"""`mama data verify` and `mama data synth` through `mama.cli.app.main` (exit codes, output)."""
from __future__ import annotations


from mama.cli.app import main
from tests.data.fixtures import cell_gt, write_folder_source, write_mat_dataset


def test_verify_ped2_testing(ped2_root, capsys):
    assert main(["data", "verify", "--dataset", "ped2", "--data-root", str(ped2_root), "--split", "testing"]) == 0
    out = capsys.readouterr().out
    for video, frames, abnormal, interval in [("01", 180, 120, "61-180"), ("03", 150, 142, "5-146"), ("06", 180, 159, "1-159")]:
        assert any(f"│ {video} " in line and f" {frames} " in line and f" {abnormal} " in line and interval in line for line in out.splitlines())
    assert "ok: 6 videos, 1020 frames, every frame decodes" in out


def test_verify_fixture_both_splits(tmp_path, capsys):
    write_mat_dataset(tmp_path, "avenue", [12, 9], cell_gt([[(2, 4), (7, 12)], []]), train_frames=(6,))
    assert main(["data", "verify", "--dataset", "avenue", "--data-root", str(tmp_path), "--split", "both"]) == 0
    out = capsys.readouterr().out
    assert "2-4, 7-12" in out
    assert "ok: 3 videos, 27 frames, every frame decodes" in out
    total = next(line for line in out.splitlines() if "total" in line)
    assert "3 videos" in total and " 27 " in total and " 9 " in total  # 3 + 6 abnormal frames


def test_verify_folder_source(tmp_path, capsys):
    folder, labels = write_folder_source(tmp_path)
    assert main(["data", "verify", "--dataset", "folder", "--data-root", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "ok: 3 videos, 22 frames, every frame decodes" in out
    cam3 = next(line for line in out.splitlines() if "cam3" in line)
    assert "unknown" in cam3 and "?" in cam3  # the mp4 has no labels
    cam1 = next(line for line in out.splitlines() if "cam1" in line)
    assert f" {int(labels['cam1'].sum())} " in cam1


def test_verify_broken_frame_is_one_error_line(tmp_path, capsys):
    write_mat_dataset(tmp_path, "ped2", [7, 6], cell_gt([[(1, 3)], [(2, 6)]]))
    broken = tmp_path / "ped2" / "testing" / "frames" / "02" / "3.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    assert main(["data", "verify", "--dataset", "ped2", "--data-root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        f"error: {broken}: cannot decode this frame (truncated or not an image); replace it or remove it from the video"
    )
    assert "Traceback" not in captured.err + captured.out and "ok:" not in captured.out


def test_verify_user_mistakes_exit_2(tmp_path, capsys):
    write_mat_dataset(tmp_path, "ped2", [6, 6], cell_gt([[(1, 3)]]))  # GT for one video, two on disk
    cases = [
        (["--dataset", "ped2", "--data-root", str(tmp_path / "missing")], "missing: data root not found"),
        (["--dataset", "ped9", "--data-root", str(tmp_path)], "unknown dataset 'ped9'; use one of ped1, ped2"),
        (["--dataset", "ped2", "--data-root", str(tmp_path)], "'gt' lists 1 videos but the testing folder has 2"),
    ]
    for args, message in cases:
        assert main(["data", "verify", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_synth_command_writes_a_dataset(tmp_path, capsys):
    args = ["data", "synth", "--out", str(tmp_path), "--seed", "4", "--size", "64", "--name", "toy",
            "--train-videos", "1", "--test-videos", "2", "--frames", "20"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {tmp_path / 'toy'}: 1 training videos (20 frames), 2 testing videos (40 frames, ")
    assert line.endswith("abnormal), 64x64, seed 4")
    assert main(["data", "verify", "--dataset", "toy", "--data-root", str(tmp_path)]) == 2  # unknown name
    assert "unknown dataset" in capsys.readouterr().err.lower()
    assert main(args) == 2  # refuses to overwrite ...
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0  # ... unless asked


def test_prepare_decodes_video_files_once_and_says_what_it_costs(tmp_path, capsys):
    from tests.data.fixtures import write_video_file
    import numpy as np

    rng = np.random.default_rng(3)
    write_video_file(tmp_path / "videos" / "cam1.mp4", 9, rng)
    write_video_file(tmp_path / "videos" / "cam2.mp4", 7, rng)
    assert main(["data", "prepare", "--dataset", "folder", "--data-root", str(tmp_path / "videos"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "prepared 2 video files, 16 frames at 32x32" in out and "MiB per 1000 frames" in out
    from mama.data.datasets import make_folder_samples, prepared_path

    for v in make_folder_samples(tmp_path / "videos"):
        assert np.load(prepared_path(v, (32, 32))).shape == (v.num_frames, 32, 32, 3)
