"""Installs the beta_lasso package (dependencies are in requirements.txt)."""

import pathlib

import setuptools

_REQUIREMENTS = [
    line.split('#')[0].strip()
    for line in pathlib.Path(__file__)
    .with_name('requirements.txt')
    .read_text()
    .splitlines()
    if line.split('#')[0].strip()
]

setuptools.setup(
    name='beta_lasso',
    version='0.1.0',
    description='Towards Learning Convolutions from Scratch (Neyshabur, 2020) in JAX/Flax.',
    packages=setuptools.find_packages(include=['beta_lasso', 'beta_lasso.*']),
    python_requires='>=3.10',
    install_requires=_REQUIREMENTS,
)
