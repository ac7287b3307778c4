from setuptools import find_packages, setup

setup(
    name="edgekit",
    version="0.1.0",
    description="Deploy dynamic (early-exit) neural networks to Raspberry Pi and Jetson boards",
    packages=find_packages(include=["edgekit", "edgekit.*"]),
    package_data={"edgekit": ["assets/*.keras", "assets/*.json", "deploy/ansible/*.yml", "deploy/ansible/*.md",
                              "deploy/ansible/action_plugins/*.py", "deploy/ansible/library/*.py"]},
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
