import glob
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
# targets/ at the top of the repository is the one table of board profiles. An installed edgekit (a wheel, or
# `pip install .`) carries a copy as edgekit/_targets/, which edgekit.targets.targets_dir() looks for first. An
# editable install keeps reading targets/ itself.
TARGETS_PACKAGE_DIR = os.path.join("edgekit", "_targets")


class BuildPyWithTargets(build_py):
    """build_py plus the board profiles copied into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = os.path.join(self.build_lib, TARGETS_PACKAGE_DIR)
        self.mkpath(dest)
        for path in sorted(glob.glob(os.path.join(HERE, "targets", "*.yaml"))):
            self.copy_file(path, os.path.join(dest, os.path.basename(path)))


setup(
    name="edgekit",
    version="0.1.0",
    description="Deploy dynamic (early-exit) neural networks to Raspberry Pi and Jetson boards",
    packages=find_packages(include=["edgekit", "edgekit.*"]),
    # The demo models (edgekit/assets/*.keras, 9 MB) and the digits splits (calibration/) are not package data:
    # a board installs edgekit without them. `edgekit demo` and the README's examples run from a source checkout
    # (editable install, `make demo`), where they are read in place. The Ansible playbooks and the
    # edgekit_release action (edgekit/deploy/ansible/) are: ansible-playbook runs them from the installed package.
    package_data={"edgekit": ["deploy/ansible/*.yml", "deploy/ansible/*.md", "deploy/ansible/action_plugins/*.py",
                              "deploy/ansible/library/*.py"]},
    cmdclass={"build_py": BuildPyWithTargets},
    python_requires=">=3.8",
    install_requires=["numpy", "click", "pyyaml"],
    extras_require={
        # ai-edge-quantizer: per-op precision recipes (adaptive precision). Its requirements (tensorflow>=2.19,
        # ai-edge-litert>=1.2, numpy, immutabledict) resolve under constraints.txt, so no --no-deps is needed.
        "convert": ["tensorflow==2.19.0", "keras", "ai-edge-quantizer", "immutabledict"],
        "onnx": ["onnx2tf", "onnx", "onnxruntime", "onnx-graphsurgeon", "sng4onnx"],
        "deploy": ["paramiko", "cryptography"],   # edgekit flash / run --host / bench --host; flash --require-signature
        # ai-edge-litert has no armv7l wheel; tflite-runtime stopped at CPython 3.11.
        "runtime": [
            "ai-edge-litert; platform_machine != 'armv7l'",
            "tflite-runtime; platform_machine == 'armv7l'",
            "cryptography",              # signed bundles (EarlyExitRunner(require_signature=True)); imported lazily
        ],
        # edgekit flash --inventory with Ansible INI/YAML inventories (parsed by ansible-core's own loader) and the
        # playbooks in edgekit/deploy/ansible/. ansible-core 2.19 needs Python >= 3.11 on the controller.
        "ansible": ["ansible-core>=2.19,<2.20; python_version >= '3.11'"],
        "report": ["matplotlib"],        # edgekit bench --report: PNG plots (laptop side; imported lazily)
        "dev": ["pytest", "scikit-learn", "tflite-runtime; python_version < '3.12'", "paramiko", "hypothesis",
                "matplotlib"],
    },
    entry_points={"console_scripts": ["edgekit=edgekit.cli:main"]},
)
