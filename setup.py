"""setup.py for trailnb (nbdev 2 layout): metadata and dependencies come from settings.ini."""

from configparser import ConfigParser
import glob, setuptools, shlex
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
min_python = cfg['min_python']

setuptools.setup(
    name=cfg['lib_name'],
    license='Apache-2.0',
    classifiers=[
        'Development Status :: ' + str(cfg['status']) + ' - ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
        'Topic :: Scientific/Engineering :: Image Recognition',
    ] + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['trailnb', 'trailnb.*']),
    include_package_data=True,
    # the papermill workflow notebooks, for `trailnb run` from an installed package
    data_files=[('share/trailnb/workflows', sorted(glob.glob('nbs/workflows/*.ipynb')))],
    install_requires=requirements,
    # megadetector: MegaDetector v5 (YOLOv5) files through MegaDetector's own package
    extras_require={'dev': dev_requirements, 'megadetector': shlex.split(cfg.get('megadetector_requirements', '')),
                    'onnx': shlex.split(cfg.get('onnx_requirements', ''))},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    version=cfg['version'],
    author=cfg['author'],
    author_email=cfg['author_email'],
    description=cfg['description'],
    keywords=cfg['keywords'],
)
