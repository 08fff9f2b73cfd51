"""p2twisted: a Twisted deployment system in the tradition of Square's P2, pop and Python Juju."""
from setuptools import find_packages, setup

setup(
    name="p2twisted",
    version="0.1.0",
    description="Intent-driven deployment: pod manifests, a coordination store, machine agents and orchestrators.",
    long_description=open("README.rst").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.9",
    # twistd finds its plugins in the twisted/plugins directory of every
    # sys.path entry.  `pip install .` puts ours into Twisted's own; with
    # package_dir {"": "."} `pip install -e .` puts this checkout on sys.path
    # (a plain .pth line, not setuptools' import hook, which Twisted's plugin
    # search does not see), so `twistd p2-agent` works in both.
    package_dir={"": "."},
    packages=find_packages(include=["p2twisted", "p2twisted.*"]) + ["twisted.plugins"],
    install_requires=[
        "twisted==26.10.0",
        "treq==26.7.0",
        "kazoo==2.11.0",
        "klein==24.8.0",
        "prometheus_client==0.26.0",
        "pyyaml==6.0.3",
        "zope.interface==8.7",
    ],
    package_data={"p2twisted.templates": ["files/*"], "p2twisted.web": ["static/*"]},
    extras_require={"test": []},
    entry_points={"console_scripts": [
        "p2 = p2twisted.cli.main:main",
        "p2-exec = p2twisted.agent.p2exec:main",
    ], "p2twisted.templates": [
        "static = p2twisted.templates.static:template",
        "command = p2twisted.templates.command:template",
        "python = p2twisted.templates.python:template",
    ], "p2twisted.syncers": [
        "haproxy = p2twisted.syncers.haproxy:syncer",
        "json = p2twisted.syncers.jsonfile:syncer",
    ]},
)
